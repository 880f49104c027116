// Training throughput of a mixture-of-experts FFN beside the dense SwiGLU FFN with the same active
// parameters (survey section 5: "MoE layer training throughput >= 70% of a dense FFN of equal
// active parameters"). The MoE layer is the `ffn` of a preset config (default moe-100m); the dense
// one is a SwiGLU of hidden (top_k + n_shared) * expert_hidden, so both run the same GEMM FLOPs per
// token up to the router.
//
// A step is forward + backward (input and every weight gradient, the MoE's auxiliary losses
// included) over N = batch tokens, x ~ N(0, 1). Each repeat times dense then MoE back to back
// (interleaved, so a change of machine load hits both); figures are medians over the repeats with
// the spread (min..max). ratio = median(t_dense) / median(t_moe): the MoE layer's throughput as a
// fraction of the dense layer's. MFU counts 6 FLOPs per active GEMM weight per token against the
// fp32 GEMM ceiling.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/ceilings.h"

namespace sw::bench {

struct MoeBenchConfig {
  std::string preset = "moe-100m";  // a preset or config path whose `ffn` is an MoE
  std::vector<int64_t> tokens = {2048, 4096};
  int repeats = 5;           // at least 3
  double min_seconds = 1.0;  // per point: repeats continue until this has passed
};

struct MoeBenchTiming {
  double median_s = 0, min_s = 0, max_s = 0, tokens_per_s = 0, mfu = 0;
};

struct MoeBenchPoint {
  int64_t tokens = 0, d_model = 0, dense_hidden = 0, n_experts = 0, top_k = 0, expert_hidden = 0, n_shared = 0;
  int repeats = 0;
  double active_gemm_weights = 0;  // per token, MoE layer (router included)
  MoeBenchTiming dense, moe;
  double ratio = 0, ratio_min = 0, ratio_max = 0;  // dense time / MoE time
  double max_over_mean_load = 0;                   // of the MoE's last forward (random inputs, fresh router)
};

std::vector<MoeBenchPoint> bench_moe(const MoeBenchConfig& cfg, const Ceilings& c, bool progress);
nlohmann::json to_json(const std::vector<MoeBenchPoint>& r);
std::string format_table(const std::vector<MoeBenchPoint>& r);

}  // namespace sw::bench
