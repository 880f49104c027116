// Attention prefill per implementation: exact fp32 tiled attention (flash_attention_forward) beside
// SageAttention v1 (sage_attention_forward: int8 QK^T, fp32 softmax and P.V), on the same random
// inputs (B = 1, causal, q ~ N(0, 1), k ~ N(0, 1) + a per-channel bias, v uniform), at each length.
//
// Each repeat times flash then sage back to back (interleaved, so that a change of machine load
// hits both); the figures are medians over the repeats, with the spread (min..max) of each. FLOPs
// counted: causal prefill 4 * T * T / 2 * D * Hq (QK^T and P.V, half the square). The speedup is
// median(t_flash) / median(t_sage): > 1 means Sage is faster. MFU is against the fp32 GEMM ceiling.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/ceilings.h"

namespace sw::bench {

struct AttentionBenchConfig {
  std::vector<int64_t> lengths = {1024, 2048, 4096};
  // (Hq, Hkv) pairs: multi-head and grouped-query.
  std::vector<std::pair<int, int>> heads = {{8, 8}, {8, 2}};
  int head_dim = 64;
  int repeats = 5;           // at least 5
  double min_seconds = 0.5;  // per (length, heads): repeats continue until this has passed
};

struct AttentionTiming {
  double median_s = 0, min_s = 0, max_s = 0;
  double tokens_per_s = 0, gflops = 0, mfu = 0;  // from the median
};

struct AttentionBenchPoint {
  int64_t len = 0;
  int hq = 0, hkv = 0, head_dim = 0, repeats = 0;
  double flops = 0;
  AttentionTiming flash, sage;
  double speedup = 0;                       // median(flash) / median(sage)
  double speedup_min = 0, speedup_max = 0;  // range of the per-repeat ratios
  std::string sage_isa;                     // the int8 path that ran (avx512vnni, avx2, scalar)
};

std::vector<AttentionBenchPoint> bench_attention(const AttentionBenchConfig& cfg, const Ceilings& c, bool progress);
nlohmann::json to_json(const std::vector<AttentionBenchPoint>& r);
std::string format_table(const std::vector<AttentionBenchPoint>& r);

}  // namespace sw::bench
