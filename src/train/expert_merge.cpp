#include "train/expert_merge.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "models/model_limits.h"
#include "nn/moe/moe.h"
#include "train/convert.h"

namespace sw::train {

using json = nlohmann::json;

namespace {

double cosine(const float* a, const float* b, int64_t D) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < D; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

// The MoE entry with M experts (top_k clipped to what is left).
json merged_ffn(const json& ffn, int64_t M, const std::string& where) {
  const int64_t E = ffn.value("n_experts", int64_t{8});
  SW_CHECK(M >= 1 && M < E, "convert", where, ": --experts must be in 1..", E - 1, " (fewer than the ", E,
           " experts of the model), got ", M);
  json out = ffn;
  out["n_experts"] = M;
  const int64_t nulls = ffn.value("n_zero_experts", int64_t{0}) + ffn.value("n_copy_experts", int64_t{0}) +
                        ffn.value("n_constant_experts", int64_t{0});
  out["top_k"] = std::min<int64_t>(ffn.value("top_k", int64_t{2}), M + nulls);
  return out;
}

bool is_moe(const json& ffn) { return ffn.is_object() && ffn.value("type", std::string()) == "moe"; }

// dst [M + nulls, ...] rows from src [E + nulls, ...]: merged expert m takes row dominant[m]; the
// parameter-free experts' rows keep their order after the SwiGLU experts.
void copy_routed_rows(const Tensor& src, Tensor& dst, const ExpertGroups& g, int64_t E) {
  const int64_t M = static_cast<int64_t>(g.dominant.size()), R = src.dim(0);
  for (int64_t m = 0; m < M; ++m) dst.select(0, m).copy_from(src.select(0, g.dominant[m]));
  for (int64_t r = E; r < R; ++r) dst.select(0, M + r - E).copy_from(src.select(0, r));
}

void merge_one(nn::MoeFfn& from, nn::MoeFfn& to, const std::vector<double>& loads, const std::string& where) {
  std::map<std::string, Tensor> src;
  from.visit_parameters([&](const std::string& n, nn::Parameter& p) { src[n] = p.var.data().to(DType::f32); });
  const int64_t E = from.config().n_experts, M = to.config().n_experts;
  const Tensor& router = src.at("router.weight");  // [R, D]
  const int64_t D = router.dim(1);
  std::vector<float> rows = router.to_floats();
  rows.resize(static_cast<size_t>(E * D));
  std::vector<double> u(loads.begin(), loads.begin() + std::min<size_t>(loads.size(), E));
  if (static_cast<int64_t>(u.size()) != E) u.clear();
  const ExpertGroups g = group_experts(rows, E, D, u, M);
  to.visit_parameters([&](const std::string& n, nn::Parameter& p) {
    Tensor& dst = p.var.mutable_data();
    const Tensor& s = src.at(n);
    if (n == "router.weight" || n == "selection_bias") {
      copy_routed_rows(s, dst, g, E);
    } else if (n == "w_gate" || n == "w_up" || n == "w_down") {
      for (int64_t m = 0; m < M; ++m) {
        double total = 0;
        for (int64_t e : g.members[m]) total += u.empty() ? 1.0 : u[e];
        const bool uniform = u.empty() || total <= 0;
        if (uniform) total = static_cast<double>(g.members[m].size());
        const int64_t per = s.numel() / E;
        std::vector<double> acc(static_cast<size_t>(per), 0.0);
        const float* sp = s.data<float>();
        for (int64_t e : g.members[m]) {
          const double w = (uniform ? 1.0 : u[e]) / total;
          for (int64_t i = 0; i < per; ++i) acc[i] += w * sp[e * per + i];
        }
        float* dp = dst.data<float>() + m * per;
        for (int64_t i = 0; i < per; ++i) dp[i] = static_cast<float>(acc[i]);
      }
    } else {
      SW_CHECK(s.shape() == dst.shape(), "convert", where, ": '", n, "' is ", s.describe(), ", merged ",
               dst.describe());
      dst.copy_from(s);
    }
  });
}

}  // namespace

ExpertGroups group_experts(const std::vector<float>& router_rows, int64_t E, int64_t D,
                           const std::vector<double>& loads, int64_t M) {
  SW_CHECK(M >= 1 && M <= E && static_cast<int64_t>(router_rows.size()) == E * D, "convert",
           "group_experts: need 1 <= M <= E and [E, D] router rows");
  SW_CHECK(loads.empty() || static_cast<int64_t>(loads.size()) == E, "convert", "group_experts: loads must have ", E,
           " entries, got ", loads.size());
  auto row = [&](int64_t e) { return router_rows.data() + e * D; };
  std::vector<int64_t> dom;
  int64_t first = 0;
  for (int64_t e = 1; e < E && !loads.empty(); ++e)
    if (loads[e] > loads[first]) first = e;
  dom.push_back(first);
  std::vector<double> closest(E, -2.0);  // max cosine to any dominant so far
  while (static_cast<int64_t>(dom.size()) < M) {
    int64_t pick = -1;
    for (int64_t e = 0; e < E; ++e) {
      closest[e] = std::max(closest[e], cosine(row(e), row(dom.back()), D));
      if (std::find(dom.begin(), dom.end(), e) != dom.end()) continue;
      if (pick < 0 || closest[e] < closest[pick]) pick = e;
    }
    dom.push_back(pick);
  }
  std::vector<std::vector<int64_t>> groups(M);
  for (int64_t e = 0; e < E; ++e) {
    int64_t best = -1;
    for (int64_t m = 0; m < M; ++m) {
      if (dom[m] == e) {
        best = m;
        break;
      }
    }
    if (best < 0) {
      double bc = -2;
      for (int64_t m = 0; m < M; ++m) {
        const double c = cosine(row(e), row(dom[m]), D);
        if (c > bc || (c == bc && dom[m] < dom[best])) bc = c, best = m;
      }
    }
    groups[best].push_back(e);  // e ascending, so members are sorted
  }
  std::vector<int64_t> order(M);
  for (int64_t m = 0; m < M; ++m) order[m] = m;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return groups[a][0] < groups[b][0]; });
  ExpertGroups out;
  for (int64_t m : order) out.dominant.push_back(dom[m]), out.members.push_back(groups[m]);
  return out;
}

std::unique_ptr<models::LanguageModel> merge_experts(models::LanguageModel& moe, int64_t M,
                                                     const std::vector<std::vector<double>>& loads,
                                                     const std::string& where) {
  models::ModelConfig c = moe.config();
  const int converted = rewrite_ffns(c, is_moe, [&](const nlohmann::json& f) { return merged_ffn(f, M, where); });
  SW_CHECK(converted > 0, "convert", where, ": the model has no MoE FFN to merge");
  c.name += "-merged";
  c = models::parse_model_config(models::model_config_to_json(c), where + " (merged)");
  auto out = models::build_model(c, where);

  // Everything outside the MoE FFNs is copied by name; each distinct MoE FFN is merged once.
  std::set<nn::Module*> moe_ffns;
  for (models::Block* b : moe.blocks())
    if (dynamic_cast<nn::MoeFfn*>(b->ffn())) moe_ffns.insert(b->ffn());
  std::map<std::string, Tensor> weights;
  moe.visit_parameters([&](const std::string& n, nn::Parameter& p) { weights[n] = p.var.data().to(DType::f32); });
  out->visit_parameters([&](const std::string& n, nn::Parameter& p) {
    auto it = weights.find(n);
    if (it != weights.end() && it->second.shape() == p.var.data().shape()) p.var.mutable_data().copy_from(it->second);
  });
  std::set<nn::Ffn*> done;
  size_t routed = 0;
  for (size_t i = 0; i < moe.blocks().size(); ++i) {
    auto* from = dynamic_cast<nn::MoeFfn*>(moe.blocks()[i]->ffn());
    if (!from) continue;
    const std::vector<double> empty;
    const std::vector<double>& l = routed < loads.size() ? loads[routed] : empty;
    ++routed;
    if (!done.insert(from).second) continue;
    auto* to = dynamic_cast<nn::MoeFfn*>(out->blocks()[i]->ffn());
    SW_CHECK(to, "convert", where, ": block ", i, " lost its MoE FFN in the merged model");
    merge_one(*from, *to, l, where + " block " + std::to_string(i));
  }
  return out;
}

}  // namespace sw::train
