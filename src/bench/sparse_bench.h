// Block-sparse attention against dense causal attention (issue 12: "work actually skipped"): the
// same tiled kernel (flash_attention_forward), the same random inputs (B = 1, q, k ~ N(0, 1),
// v ~ N(0, 0.5)), once causal-dense and once with a block layout that keeps `density` of the
// causal (query block, key block) pairs: every query block keeps its diagonal block plus randomly
// chosen earlier blocks, round(density * (qb + 1)) in all (at least 1), from a fixed seed. The
// reported density is the layout's actual kept / causal pairs.
//
// Each repeat times dense then sparse back to back (interleaved, so a change of machine load hits
// both) after one untimed warm-up of each; the figures are medians over the repeats (>= 3), with
// min..max. ratio = median(sparse) / median(dense); the target is ratio <= 0.2 at 10%
// density and T = 16384.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace sw::bench {

struct SparseBenchConfig {
  int64_t len = 16384;
  int hq = 4, hkv = 4, head_dim = 64;
  int block = 64;          // layout block (query and key), tokens
  double density = 0.10;   // target fraction of causal block pairs kept
  int repeats = 3;         // at least 3
  uint64_t seed = 1;
};

struct SparseBenchResult {
  int64_t len = 0;
  int hq = 0, hkv = 0, head_dim = 0, block = 0, repeats = 0;
  double density = 0;  // actual kept / causal block pairs
  double dense_s = 0, dense_min_s = 0, dense_max_s = 0;
  double sparse_s = 0, sparse_min_s = 0, sparse_max_s = 0;
  double ratio = 0;  // sparse_s / dense_s
};

SparseBenchResult bench_sparse_attention(const SparseBenchConfig& cfg, bool progress);
nlohmann::json to_json(const SparseBenchResult& r);
std::string format_table(const SparseBenchResult& r);

}  // namespace sw::bench
