#include "bench/sparse_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/timer.h"
#include "kernels/attention/flash_attention.h"

namespace sw::bench {
namespace {

namespace ka = sw::kernels::attention;

std::vector<float> normal(size_t n, std::mt19937_64& rng, float stddev) {
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> x(n);
  for (auto& e : x) e = dist(rng);
  return x;
}

void summarise(std::vector<double> t, double* median, double* lo, double* hi) {
  std::sort(t.begin(), t.end());
  *median = t[t.size() / 2];
  *lo = t.front();
  *hi = t.back();
}

}  // namespace

SparseBenchResult bench_sparse_attention(const SparseBenchConfig& cfg, bool progress) {
  SW_CHECK(cfg.len >= 1 && cfg.len <= (1 << 20), "bench", "sparse: sequence length must be in [1, 2^20], got ",
           cfg.len);
  SW_CHECK(cfg.repeats >= 3, "bench", "sparse: at least 3 repeats, got ", cfg.repeats);
  SW_CHECK(cfg.block >= 1 && cfg.block <= 4096, "bench", "sparse: block must be in [1, 4096], got ", cfg.block);
  SW_CHECK(cfg.density > 0 && cfg.density <= 1, "bench", "sparse: density must be in (0, 1], got ", cfg.density);
  SW_CHECK(cfg.hq >= 1 && cfg.hkv >= 1 && cfg.hq % cfg.hkv == 0 && cfg.hq <= 256 && cfg.head_dim >= 1 &&
               cfg.head_dim <= 512,
           "bench", "sparse: bad heads ", cfg.hq, "/", cfg.hkv, " or head_dim ", cfg.head_dim);
  ka::AttentionDims d;
  d.B = 1, d.Tq = d.Tk = static_cast<int>(cfg.len), d.Hq = cfg.hq, d.Hkv = cfg.hkv, d.Dk = d.Dv = cfg.head_dim;
  std::mt19937_64 rng(cfg.seed);
  const size_t nq = static_cast<size_t>(cfg.len) * cfg.hq * cfg.head_dim,
               nk = static_cast<size_t>(cfg.len) * cfg.hkv * cfg.head_dim;
  const std::vector<float> q = normal(nq, rng, 1.f), k = normal(nk, rng, 1.f), v = normal(nk, rng, 0.5f);
  std::vector<float> o(nq), lse(static_cast<size_t>(cfg.hq) * cfg.len);

  // The layout: per query block its diagonal plus random earlier blocks, round(density * (qb + 1)).
  const int nb = ka::ceil_div(static_cast<int>(cfg.len), cfg.block);
  std::vector<int32_t> row_ptr{0}, col_idx, earlier;
  int64_t kept = 0, total = 0;
  for (int qb = 0; qb < nb; ++qb) {
    const int want = std::max(1, static_cast<int>(std::lround(cfg.density * (qb + 1))));
    earlier.resize(static_cast<size_t>(qb));
    std::iota(earlier.begin(), earlier.end(), 0);
    std::shuffle(earlier.begin(), earlier.end(), rng);
    const size_t start = col_idx.size();
    col_idx.insert(col_idx.end(), earlier.begin(), earlier.begin() + (want - 1));
    col_idx.push_back(qb);
    std::sort(col_idx.begin() + static_cast<std::ptrdiff_t>(start), col_idx.end());
    row_ptr.push_back(static_cast<int32_t>(col_idx.size()));
    kept += want;
    total += qb + 1;
  }
  ka::AttentionParams dense;  // causal
  ka::AttentionParams sparse;
  sparse.layout = ka::BlockLayout{cfg.block, cfg.block, 1, row_ptr.data(), col_idx.data()};

  auto run = [&](const ka::AttentionParams& p) {
    const double t0 = now_seconds();
    ka::flash_attention_forward(q.data(), k.data(), v.data(), d, p, o.data(), lse.data());
    return now_seconds() - t0;
  };
  run(dense);
  run(sparse);
  std::vector<double> td, ts;
  for (int r = 0; r < cfg.repeats; ++r) {
    td.push_back(run(dense));
    ts.push_back(run(sparse));
    if (progress)
      std::fprintf(stderr, "\rsparse bench T=%lld: repeat %d/%d dense %.3fs sparse %.3fs", static_cast<long long>(cfg.len),
                   r + 1, cfg.repeats, td.back(), ts.back());
  }
  if (progress) std::fprintf(stderr, "\n");
  SparseBenchResult res;
  res.len = cfg.len, res.hq = cfg.hq, res.hkv = cfg.hkv, res.head_dim = cfg.head_dim, res.block = cfg.block;
  res.repeats = cfg.repeats;
  res.density = static_cast<double>(kept) / static_cast<double>(total);
  summarise(td, &res.dense_s, &res.dense_min_s, &res.dense_max_s);
  summarise(ts, &res.sparse_s, &res.sparse_min_s, &res.sparse_max_s);
  res.ratio = res.sparse_s / res.dense_s;
  return res;
}

nlohmann::json to_json(const SparseBenchResult& r) {
  return {{"len", r.len},           {"hq", r.hq},
          {"hkv", r.hkv},           {"head_dim", r.head_dim},
          {"block", r.block},       {"repeats", r.repeats},
          {"density", r.density},   {"dense_s", r.dense_s},
          {"dense_min_s", r.dense_min_s}, {"dense_max_s", r.dense_max_s},
          {"sparse_s", r.sparse_s}, {"sparse_min_s", r.sparse_min_s},
          {"sparse_max_s", r.sparse_max_s}, {"ratio", r.ratio}};
}

std::string format_table(const SparseBenchResult& r) {
  char line[512];
  std::snprintf(line, sizeof line,
                "block-sparse attention (causal prefill, flash fp32), T=%lld Hq=%d Hkv=%d D=%d block=%d, %d repeats\n"
                "  density %.4f of causal block pairs\n"
                "  dense  %.4f s (min %.4f, max %.4f)\n"
                "  sparse %.4f s (min %.4f, max %.4f)\n"
                "  ratio  %.4f (sparse / dense; target <= 0.20 at density 0.10, T=16384)\n",
                static_cast<long long>(r.len), r.hq, r.hkv, r.head_dim, r.block, r.repeats, r.density, r.dense_s,
                r.dense_min_s, r.dense_max_s, r.sparse_s, r.sparse_min_s, r.sparse_max_s, r.ratio);
  return line;
}

}  // namespace sw::bench
