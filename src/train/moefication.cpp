#include "train/moefication.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "models/model_limits.h"
#include "ops/ops.h"
#include "train/convert.h"

namespace sw::train {
namespace {

using json = nlohmann::json;

// a [M, K] x b [N, K]^T -> [M, N] f32 (the GEMM of ops::linear, no autograd).
Tensor matmul_nt(const Tensor& a, const Tensor& b) {
  NoGradGuard g;
  return ops::linear(Variable(a.contiguous()), Variable(b.contiguous())).data().contiguous();
}

Tensor normalized_rows(Tensor rows) {  // [R, C] f32, each row scaled to unit L2 norm (zero rows stay zero)
  rows = rows.contiguous().clone();
  const int64_t R = rows.dim(0), C = rows.dim(1);
  float* p = rows.data<float>();
  for (int64_t r = 0; r < R; ++r) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += static_cast<double>(p[r * C + c]) * p[r * C + c];
    const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.f;
    for (int64_t c = 0; c < C; ++c) p[r * C + c] *= inv;
  }
  return rows;
}

// Solves A X = B for symmetric positive definite A [n, n] (row-major), B [n, m]; B is overwritten.
void cholesky_solve(std::vector<double>& A, std::vector<double>& B, int64_t n, int64_t m, const std::string& where) {
  for (int64_t j = 0; j < n; ++j) {
    double d = A[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= A[j * n + k] * A[j * n + k];
    SW_CHECK(d > 0, "convert", where, ": the router's least-squares system is singular (calibration inputs span too ",
             "few directions; use more calibration tokens)");
    A[j * n + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double s = A[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= A[i * n + k] * A[j * n + k];
      A[i * n + j] = s / A[j * n + j];
    }
  }
  for (int64_t c = 0; c < m; ++c) {  // L y = b, then L^T x = y
    for (int64_t i = 0; i < n; ++i) {
      double s = B[i * m + c];
      for (int64_t k = 0; k < i; ++k) s -= A[i * n + k] * B[k * m + c];
      B[i * m + c] = s / A[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; --i) {
      double s = B[i * m + c];
      for (int64_t k = i + 1; k < n; ++k) s -= A[k * n + i] * B[k * m + c];
      B[i * m + c] = s / A[i * n + i];
    }
  }
}

// t [N, E]: expert e's activation mass sum_{i in e} |a[n, i]|.
std::vector<double> expert_mass(const Tensor& activation, const std::vector<int32_t>& group, int64_t E) {
  const int64_t N = activation.dim(0), H = activation.dim(1);
  const float* a = activation.data<float>();
  std::vector<double> t(static_cast<size_t>(N * E), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < H; ++i) t[n * E + group[i]] += std::fabs(a[n * H + i]);
  return t;
}

// The fraction of the total mass that the top-k experts by `rank` [N, E] hold.
double kept_mass(const std::vector<double>& mass, const float* rank, int64_t N, int64_t E, int64_t k) {
  double kept = 0, total = 0;
  std::vector<int64_t> order(E);
  for (int64_t n = 0; n < N; ++n) {
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int64_t a, int64_t b) { return rank[n * E + a] > rank[n * E + b]; });
    for (int64_t j = 0; j < k; ++j) kept += mass[n * E + order[j]];
    for (int64_t e = 0; e < E; ++e) total += mass[n * E + e];
  }
  return total > 0 ? kept / total : 1.0;
}

bool is_swiglu(const json& ffn) { return ffn.is_object() && ffn.value("type", std::string()) == "swiglu"; }

// Restores every FFN's capture pointer even when calibration throws.
struct CaptureScope {
  std::vector<nn::Ffn*> ffns;
  ~CaptureScope() {
    for (nn::Ffn* f : ffns) f->set_input_capture(nullptr);
  }
};

}  // namespace

std::vector<int32_t> cluster_coactivation(const Tensor& activation, int64_t E, int64_t iterations, uint64_t seed) {
  SW_CHECK(activation.ndim() == 2 && activation.dtype() == DType::f32, "moefication", "activation must be f32 [N, H], got ",
           activation.describe());
  const int64_t H = activation.dim(1);
  SW_CHECK(E >= 1 && H % E == 0, "moefication", "hidden width ", H, " must be a multiple of the ", E, " experts");
  const int64_t per = H / E;
  // profiles [H, N]: |a| of each neuron over the tokens, unit norm.
  Tensor prof = activation.transpose(0, 1).contiguous().clone();
  for (float* p = prof.data<float>(), *end = p + prof.numel(); p != end; ++p) *p = std::fabs(*p);
  prof = normalized_rows(prof);
  const int64_t N = prof.dim(1);

  // Farthest-point initialisation: a random first neuron, then each next centroid the neuron least
  // similar to every centroid chosen so far.
  std::mt19937_64 rng(seed);
  std::vector<int64_t> seeds = {static_cast<int64_t>(rng() % static_cast<uint64_t>(H))};
  std::vector<float> best_sim(H, -2.f);
  while (static_cast<int64_t>(seeds.size()) < E) {
    const float* c = prof.data<float>() + seeds.back() * N;
    for (int64_t i = 0; i < H; ++i) {
      const float* p = prof.data<float>() + i * N;
      double s = 0;
      for (int64_t n = 0; n < N; ++n) s += static_cast<double>(p[n]) * c[n];
      best_sim[i] = std::max(best_sim[i], static_cast<float>(s));
    }
    for (int64_t s : seeds) best_sim[s] = 2.f;
    seeds.push_back(std::min_element(best_sim.begin(), best_sim.end()) - best_sim.begin());
  }
  Tensor cent = Tensor::empty({E, N});
  for (int64_t e = 0; e < E; ++e) cent.select(0, e).copy_from(prof.select(0, seeds[e]));

  std::vector<int32_t> group(H, -1);
  for (int64_t it = 0; it < std::max<int64_t>(1, iterations); ++it) {
    const Tensor sim = matmul_nt(prof, cent);  // [H, E]
    const float* s = sim.data<float>();
    std::vector<int64_t> pairs(static_cast<size_t>(H * E));
    std::iota(pairs.begin(), pairs.end(), 0);
    // Most similar first; ties by the lower (neuron, cluster) index, so the result is deterministic.
    std::stable_sort(pairs.begin(), pairs.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
    std::vector<int32_t> next(H, -1);
    std::vector<int64_t> filled(E, 0);
    for (int64_t p : pairs) {
      const int64_t i = p / E, e = p % E;
      if (next[i] >= 0 || filled[e] == per) continue;
      next[i] = static_cast<int32_t>(e), ++filled[e];
    }
    const bool moved = next != group;
    group = std::move(next);
    if (!moved) break;
    cent.zero();
    for (int64_t i = 0; i < H; ++i) {
      float* c = cent.data<float>() + group[i] * N;
      const float* p = prof.data<float>() + i * N;
      for (int64_t n = 0; n < N; ++n) c[n] += p[n];
    }
    cent = normalized_rows(cent);
  }
  return group;
}

Tensor fit_router(const Tensor& x, const Tensor& activation, const std::vector<int32_t>& group, int64_t E,
                  double ridge) {
  const int64_t N = x.dim(0), D = x.dim(1);
  SW_CHECK(activation.dim(0) == N && static_cast<int64_t>(group.size()) == activation.dim(1), "moefication",
           "x ", x.describe(), ", activation ", activation.describe(), " and ", group.size(), " groups do not match");
  const std::vector<double> t = expert_mass(activation, group, E);
  const Tensor xt = x.transpose(0, 1).contiguous();  // [D, N]
  const Tensor gram = matmul_nt(xt, xt);             // X^T X [D, D]
  std::vector<float> tt(static_cast<size_t>(E * N));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) tt[e * N + n] = static_cast<float>(t[n * E + e]);
  const Tensor rhs = matmul_nt(xt, Tensor::from_vector(tt, {E, N}));  // X^T T [D, E]
  std::vector<double> A = gram.to_doubles(), B = rhs.to_doubles();
  double trace = 0;
  for (int64_t d = 0; d < D; ++d) trace += A[d * D + d];
  const double lambda = std::max(ridge * trace / static_cast<double>(D), 1e-12);
  for (int64_t d = 0; d < D; ++d) A[d * D + d] += lambda;
  cholesky_solve(A, B, D, E, "moefication");
  std::vector<float> w(static_cast<size_t>(E * D));
  for (int64_t d = 0; d < D; ++d)
    for (int64_t e = 0; e < E; ++e) w[e * D + d] = static_cast<float>(B[d * E + e]);
  return Tensor::from_vector(w, {E, D});
}

std::unique_ptr<models::LanguageModel> moefy(models::LanguageModel& dense, const Tensor& calibration_ids,
                                             const MoeficationOptions& o, const std::string& where,
                                             std::vector<MoeficationLayer>* report) {
  const int64_t E = o.n_experts;
  SW_CHECK(E >= 2 && E <= 1024, "convert", "--experts must be in 2..1024, got ", E);
  SW_CHECK(o.top_k >= 1 && o.top_k <= E, "convert", "--top-k must be in 1..", E, ", got ", o.top_k);
  SW_CHECK(calibration_ids.ndim() == 2 && calibration_ids.dtype() == DType::i32 && calibration_ids.numel() > 0,
           "convert", where, ": calibration ids must be i32 [B, T], got ", calibration_ids.describe());

  // The distinct SwiGLU FFNs (a shared block's FFN once) and their parameter prefixes.
  std::vector<nn::SwiGluMlp*> ffns;
  for (models::Block* b : dense.blocks())
    if (auto* f = dynamic_cast<nn::SwiGluMlp*>(b->ffn()); f && std::find(ffns.begin(), ffns.end(), f) == ffns.end())
      ffns.push_back(f);
  SW_CHECK(!ffns.empty(), "convert", where, ": the model has no SwiGLU FFN to MoEfy");
  std::map<const nn::Parameter*, std::string> names;
  dense.visit_parameters([&](const std::string& n, nn::Parameter& p) { names[&p] = n; });

  // Calibration: the inputs every FFN sees on the calibration tokens.
  std::map<nn::Ffn*, std::vector<Tensor>> inputs;
  {
    CaptureScope scope;
    for (nn::SwiGluMlp* f : ffns) f->set_input_capture(&inputs[f]), scope.ffns.push_back(f);
    NoGradGuard g;
    const int64_t B = calibration_ids.dim(0);
    for (int64_t b = 0; b < B; b += 16) dense.hidden(calibration_ids.slice(0, b, std::min(B, b + 16)).contiguous());
  }

  struct Converted {
    Tensor router, w_gate, w_up, w_down;  // [E, D], [E, H/E, D] x2, [E, D, H/E]
  };
  std::map<std::string, Converted> converted;  // by prefix "blocks.3.ffn."
  if (report) report->clear();
  for (nn::SwiGluMlp* f : ffns) {
    std::map<std::string, Tensor> w;
    std::string prefix;
    f->visit_parameters([&](const std::string& n, nn::Parameter& p) {
      w[n] = p.var.data().to(DType::f32).contiguous();
      if (n == "gate.weight") prefix = names.at(&p).substr(0, names.at(&p).size() - n.size());
    });
    SW_CHECK(w.count("gate.weight") && w.count("up.weight") && w.count("down.weight"), "convert", where,
             ": a SwiGLU FFN without gate/up/down weights");
    SW_CHECK(!inputs[f].empty(), "convert", where, ": ", prefix, "saw no calibration tokens");
    Tensor x, act;  // [N, D] FFN inputs, [N, H] hidden activations silu(gate x) * (up x)
    {
      NoGradGuard g;
      std::vector<Variable> rows;
      for (const Tensor& t : inputs[f]) rows.emplace_back(t);
      x = ops::concat(rows, 0).data().contiguous();
      act = ops::swiglu(Variable(matmul_nt(x, w["gate.weight"])), Variable(matmul_nt(x, w["up.weight"])))
                .data()
                .contiguous();
    }
    const int64_t N = x.dim(0), D = x.dim(1), H = w["gate.weight"].dim(0);
    SW_CHECK(H % E == 0, "convert", where, ": ", prefix, " hidden width ", H, " is not a multiple of --experts ", E);
    const std::vector<int32_t> group = cluster_coactivation(act, E, o.iterations, o.seed);
    Converted c;
    c.router = fit_router(x, act, group, E, o.ridge);
    const int64_t per = H / E;
    c.w_gate = Tensor::empty({E, per, D}), c.w_up = Tensor::empty({E, per, D}), c.w_down = Tensor::empty({E, D, per});
    std::vector<int64_t> filled(E, 0);
    for (int64_t i = 0; i < H; ++i) {  // neurons keep their order inside an expert
      const int64_t e = group[i], j = filled[e]++;
      c.w_gate.select(0, e).select(0, j).copy_from(w["gate.weight"].select(0, i));
      c.w_up.select(0, e).select(0, j).copy_from(w["up.weight"].select(0, i));
      c.w_down.select(0, e).select(1, j).copy_from(w["down.weight"].select(1, i));
    }
    if (report) {
      const std::vector<double> mass = expert_mass(act, group, E);
      const Tensor logits = matmul_nt(x, c.router);
      std::vector<float> oracle(mass.begin(), mass.end());
      report->push_back({prefix.substr(0, prefix.size() - 1), N, kept_mass(mass, logits.data<float>(), N, E, o.top_k),
                         kept_mass(mass, oracle.data(), N, E, o.top_k)});
    }
    converted[prefix] = std::move(c);
  }

  // The config: every SwiGLU FFN becomes an MoE of E unit-gated experts of H / E neurons.
  models::ModelConfig cfg = dense.config();
  rewrite_ffns(cfg, is_swiglu, [&](const json& f) {
    const int64_t hidden = f.value("hidden", int64_t{0}) ? f.value("hidden", int64_t{0}) : dense.config().resolved_ffn_hidden();
    SW_CHECK(hidden % E == 0, "convert", where, ": FFN hidden width ", hidden, " is not a multiple of --experts ", E);
    return json{{"type", "moe"},        {"n_experts", E},          {"top_k", o.top_k}, {"expert_hidden", hidden / E},
                {"unit_gates", true},   {"renormalize", false},    {"score", "softmax"}};
  });
  cfg.name = dense.config().name + "-moefied";
  cfg.family = "moe";
  cfg = models::parse_model_config(models::model_config_to_json(cfg), where + " (moefied)");
  auto moe = models::build_model(cfg, where);

  std::map<std::string, Tensor> weights;
  dense.visit_parameters([&](const std::string& n, nn::Parameter& p) { weights[n] = p.var.data().to(DType::f32); });
  const std::map<std::string, Tensor Converted::*> parts = {{"router.weight", &Converted::router},
                                                             {"w_gate", &Converted::w_gate},
                                                             {"w_up", &Converted::w_up},
                                                             {"w_down", &Converted::w_down}};
  moe->visit_parameters([&](const std::string& n, nn::Parameter& p) {
    Tensor& dst = p.var.mutable_data();
    const Tensor* src = nullptr;
    if (auto it = weights.find(n); it != weights.end()) src = &it->second;
    for (const auto& [suffix, member] : parts)
      if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
        if (auto c = converted.find(n.substr(0, n.size() - suffix.size())); c != converted.end()) src = &(c->second.*member);
    SW_CHECK(src != nullptr, "convert", where, ": no source for '", n, "' in the dense model");
    SW_CHECK(src->shape() == dst.shape(), "convert", where, ": '", n, "' is ", src->describe(), " from the dense model, ",
             dst.describe(), " in the MoEfied one");
    dst.copy_from(*src);
  });
  return moe;
}

}  // namespace sw::train
