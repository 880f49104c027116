#include "bench/moe_bench.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/timer.h"
#include "models/presets.h"
#include "models/registry.h"
#include "nn/moe/moe.h"
#include "ops/ops.h"

namespace sw::bench {
namespace {

MoeBenchTiming summarise(std::vector<double> t, int64_t tokens, double flops_per_token, const Ceilings& c) {
  MoeBenchTiming r;
  std::sort(t.begin(), t.end());
  r.median_s = t[t.size() / 2], r.min_s = t.front(), r.max_s = t.back();
  r.tokens_per_s = static_cast<double>(tokens) / r.median_s;
  r.mfu = c.f32_gflops > 0 ? r.tokens_per_s * flops_per_token / (c.f32_gflops * 1e9) : 0;
  return r;
}

// One training step of an FFN: forward, a fixed random projection of the output as the loss (plus
// the FFN's auxiliary losses), backward.
double time_step(nn::Ffn& ffn, const Tensor& x, const Tensor& r) {
  ffn.zero_grad();
  const double t0 = now_seconds();
  Variable xv(x, true);
  Variable loss = ops::sum(ops::mul(ffn.forward(xv), Variable(r)));
  Variable aux = ffn.aux_loss();
  if (aux.defined()) loss = ops::add(loss, aux);
  loss.backward();
  return now_seconds() - t0;
}

}  // namespace

std::vector<MoeBenchPoint> bench_moe(const MoeBenchConfig& cfg, const Ceilings& c, bool progress) {
  SW_CHECK(!cfg.tokens.empty(), "bench", "--moe: no token counts given");
  SW_CHECK(cfg.repeats >= 3, "bench", "moe: repeats must be >= 3, got ", cfg.repeats);
  const models::ModelConfig mc = models::resolve_preset(cfg.preset);
  SW_CHECK(mc.ffn.value("type", "") == "moe", "bench", "--moe: preset ", cfg.preset,
           " has no MoE `ffn` (its ffn type is '", mc.ffn.value("type", ""), "')");
  const std::string where = cfg.preset + ".ffn";
  std::mt19937_64 rng(1);
  std::unique_ptr<nn::Ffn> moe = models::find_ffn("moe", where).make(mc.ffn, mc, nn::MixerSite{0, mc.n_layers}, rng, where);
  auto& m = dynamic_cast<nn::MoeFfn&>(*moe);
  const nn::MoeConfig& e = m.config();
  const int64_t D = mc.d_model, dense_hidden = (e.top_k + e.n_shared) * m.expert_hidden();
  const nlohmann::json dense_cfg = {{"type", "swiglu"}, {"hidden", dense_hidden}};
  std::unique_ptr<nn::Ffn> dense =
      models::find_ffn("swiglu", where).make(dense_cfg, mc, nn::MixerSite{0, mc.n_layers}, rng, where);

  std::vector<MoeBenchPoint> out;
  for (int64_t N : cfg.tokens) {
    SW_CHECK(N >= 1 && N <= (int64_t{1} << 20), "bench", "--moe: token counts must be 1..2^20, got ", N);
    MoeBenchPoint p;
    p.tokens = N, p.d_model = D, p.dense_hidden = dense_hidden, p.n_experts = e.n_experts, p.top_k = e.top_k;
    p.expert_hidden = m.expert_hidden(), p.n_shared = e.n_shared;
    p.active_gemm_weights = m.gemm_weights_per_token();
    std::mt19937_64 drng(static_cast<uint64_t>(N));
    std::normal_distribution<float> dist(0.f, 1.f);
    std::vector<float> xs(N * D), rs(N * D);
    for (float& v : xs) v = dist(drng);
    for (float& v : rs) v = dist(drng);
    const Tensor x = Tensor::from_vector(xs, {1, N, D}), r = Tensor::from_vector(rs, {1, N, D});
    time_step(*dense, x, r), time_step(*moe, x, r);  // warm: first-call allocations and JIT
    std::vector<double> td, tm, ratios;
    const double t0 = now_seconds();
    while (static_cast<int>(td.size()) < cfg.repeats || now_seconds() - t0 < cfg.min_seconds) {
      td.push_back(time_step(*dense, x, r));
      tm.push_back(time_step(*moe, x, r));
      ratios.push_back(td.back() / tm.back());
      if (td.size() >= 50) break;
    }
    p.repeats = static_cast<int>(td.size());
    p.dense = summarise(td, N, 6.0 * static_cast<double>(dense->gemm_weights_per_token()), c);
    p.moe = summarise(tm, N, 6.0 * p.active_gemm_weights, c);
    p.ratio = p.dense.median_s / p.moe.median_s;
    p.ratio_min = *std::min_element(ratios.begin(), ratios.end());
    p.ratio_max = *std::max_element(ratios.begin(), ratios.end());
    const std::vector<double> load = m.expert_load();
    double mx = 0, mean = 0;
    for (int64_t i = 0; i < e.n_experts; ++i) mx = std::max(mx, load[i]), mean += load[i] / static_cast<double>(e.n_experts);
    p.max_over_mean_load = mean > 0 ? mx / mean : 0;
    if (progress)
      std::fprintf(stderr, "[bench] moe N=%lld: dense %.1f ms, moe %.1f ms, ratio %.2f\n", static_cast<long long>(N),
                   1e3 * p.dense.median_s, 1e3 * p.moe.median_s, p.ratio);
    out.push_back(p);
  }
  return out;
}

nlohmann::json to_json(const std::vector<MoeBenchPoint>& r) {
  auto timing = [](const MoeBenchTiming& t) {
    return nlohmann::json{{"median_s", t.median_s}, {"min_s", t.min_s}, {"max_s", t.max_s},
                          {"tokens_per_s", t.tokens_per_s}, {"mfu", t.mfu}};
  };
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : r)
    j.push_back({{"tokens", p.tokens}, {"d_model", p.d_model}, {"dense_hidden", p.dense_hidden},
                 {"n_experts", p.n_experts}, {"top_k", p.top_k}, {"expert_hidden", p.expert_hidden},
                 {"n_shared", p.n_shared}, {"repeats", p.repeats}, {"active_gemm_weights", p.active_gemm_weights},
                 {"dense", timing(p.dense)}, {"moe", timing(p.moe)}, {"ratio", p.ratio}, {"ratio_min", p.ratio_min},
                 {"ratio_max", p.ratio_max}, {"max_over_mean_load", p.max_over_mean_load}});
  return j;
}

std::string format_table(const std::vector<MoeBenchPoint>& r) {
  std::ostringstream os;
  os << "MoE FFN training step (fwd + bwd) vs the dense SwiGLU of equal active parameters, median of repeats\n";
  char line[256];
  std::snprintf(line, sizeof line, "  %-7s %-22s %-12s %-12s %-8s %-8s %-18s\n", "tokens", "MoE (E/k/H/shared)",
                "dense ms", "MoE ms", "dense MFU", "MoE MFU", "MoE/dense thr.");
  os << line;
  for (const auto& p : r) {
    char shape[64];
    std::snprintf(shape, sizeof shape, "%lld/%lld/%lld/%lld vs H=%lld", static_cast<long long>(p.n_experts),
                  static_cast<long long>(p.top_k), static_cast<long long>(p.expert_hidden),
                  static_cast<long long>(p.n_shared), static_cast<long long>(p.dense_hidden));
    std::snprintf(line, sizeof line, "  %-7lld %-22s %-12.2f %-12.2f %-8.1f%% %-8.1f%% %.2f (%.2f..%.2f)\n",
                  static_cast<long long>(p.tokens), shape, 1e3 * p.dense.median_s, 1e3 * p.moe.median_s,
                  100 * p.dense.mfu, 100 * p.moe.mfu, p.ratio, p.ratio_min, p.ratio_max);
    os << line;
  }
  return os.str();
}

}  // namespace sw::bench
