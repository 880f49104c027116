// Internal building blocks of the tiled attention kernels (not a public API).
//
// Every tile computation is written on "panels": kTile-wide rows of floats whose index is the
// vectorised dimension (queries in the forward and dq passes, keys in the dk/dv pass). Two
// micro-kernels cover all products:
//   rows_dot_panel:   c[r][:] = sum_d a[r][d] * bt[d][:]   (a rows read in place from [B,T,H,D])
//   panel_accumulate: ct[d][:] += sum_r a[r][d] * p[r][:]
// Both keep a kRows x kTile accumulator block in registers (4 x 64 floats = 16 AVX-512 vectors).
// Softmax arguments are in log2 units (q is pre-multiplied by scale * log2(e)) so exp is exp2.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/attention/attention_params.h"

namespace sw::kernels::attention::detail {

inline constexpr int kTile = 64;  // query-tile and key-tile width (the SIMD dimension)
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2 = 0.693147180559945309f;
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 2^x for softmax arguments (x <= ~0): 0 below -125 (so -inf and far-masked entries vanish
// exactly), otherwise a degree-7 polynomial on the fractional part; relative error <= 7e-8.
// Plain arithmetic so that GCC vectorises loops calling it (libm's exp2f is not vectorised
// without -ffast-math).
inline float exp2_softmax(float x) {
  const float keep = x < -125.f ? 0.f : 1.f;  // 0 for -inf and far-masked entries
  const float xc = std::min(std::max(x, -125.f), 127.f);
  const float n = __builtin_rintf(xc);
  const float f = (xc - n) * kLn2;  // |f| <= ln2 / 2
  float p = 1.f / 5040.f;
  p = p * f + 1.f / 720.f;
  p = p * f + 1.f / 120.f;
  p = p * f + 1.f / 24.f;
  p = p * f + 1.f / 6.f;
  p = p * f + 0.5f;
  p = p * f + 1.f;
  p = p * f + 1.f;
  const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  // Scaling by a selected 0/1 (rather than selecting the computed value) keeps the loop
  // branch-free, which GCC needs to vectorise it under the default -ftrapping-math.
  return p * two_n * keep;
}

// A panel row is kTile / kLanes native vectors. GCC vector extensions (not intrinsics; the width
// follows the target ISA) make the kRows x kTile accumulator block of the micro-kernels live in
// registers: GCC 12 keeps plain accumulator arrays on the stack. AVX-512 has 32 registers, room for
// 4 rows x 4 vectors; AVX2 has 16, room for 1 row x 8 vectors.
#if defined(__AVX512F__)
inline constexpr int kLanes = 16, kRows = 4;
#elif defined(__AVX__)
inline constexpr int kLanes = 8, kRows = 1;
#else
inline constexpr int kLanes = 4, kRows = 1;
#endif
using F32xN = float __attribute__((vector_size(kLanes * sizeof(float))));
inline constexpr int kVecs = kTile / kLanes;

inline F32xN loadv(const float* p) {
  F32xN v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storev(float* p, F32xN v) { std::memcpy(p, &v, sizeof v); }

// Keeps v in a register: otherwise GCC folds the load into each of the kRows FMAs that use it and
// the micro-kernels become load-bound (20 loads per 16 FMAs instead of 8 with AVX-512).
inline void pin_register(F32xN& v) {
#if defined(__GNUC__) && defined(__AVX512F__)
  __asm__("" : "+v"(v));  // any of the 32 vector registers
#elif defined(__GNUC__) && defined(__AVX__)
  __asm__("" : "+x"(v));
#else
  (void)v;
#endif
}

// c[r][0:kTile] = sum_d a[r * a_stride + d] * bt[d * kTile + 0:kTile] for r < n.
inline void rows_dot_panel(const float* a, size_t a_stride, int n, const float* __restrict bt, int D,
                           float* __restrict c) {
  int r = 0;
  for (; r + kRows <= n; r += kRows) {
    const float* ar[kRows];
    for (int row = 0; row < kRows; ++row) ar[row] = a + (r + row) * a_stride;
    F32xN acc[kRows][kVecs] = {};
    for (int d = 0; d < D; ++d) {
      const float* b = bt + static_cast<size_t>(d) * kTile;
      float x[kRows];
      for (int row = 0; row < kRows; ++row) x[row] = ar[row][d];
      for (int u = 0; u < kVecs; ++u) {
        F32xN bv = loadv(b + kLanes * u);
        pin_register(bv);
        for (int row = 0; row < kRows; ++row) acc[row][u] += x[row] * bv;
      }
    }
    for (int row = 0; row < kRows; ++row)
      for (int u = 0; u < kVecs; ++u) storev(c + static_cast<size_t>(r + row) * kTile + kLanes * u, acc[row][u]);
  }
  for (; r < n; ++r) {
    const float* a0 = a + r * a_stride;
    F32xN acc[kVecs] = {};
    for (int d = 0; d < D; ++d) {
      const float x = a0[d];
      for (int u = 0; u < kVecs; ++u) acc[u] += x * loadv(bt + static_cast<size_t>(d) * kTile + kLanes * u);
    }
    for (int u = 0; u < kVecs; ++u) storev(c + static_cast<size_t>(r) * kTile + kLanes * u, acc[u]);
  }
}

// ct[d][0:kTile] += sum_r a[r * a_stride + d] * p[r * kTile + 0:kTile] for d < D, r < n.
inline void panel_accumulate(const float* a, size_t a_stride, int n, const float* __restrict p, int D,
                             float* __restrict ct) {
  int d = 0;
  for (; d + kRows <= D; d += kRows) {
    F32xN acc[kRows][kVecs];
    for (int row = 0; row < kRows; ++row)
      for (int u = 0; u < kVecs; ++u) acc[row][u] = loadv(ct + static_cast<size_t>(d + row) * kTile + kLanes * u);
    for (int r = 0; r < n; ++r) {
      const float* ar = a + r * a_stride + d;
      float x[kRows];
      for (int row = 0; row < kRows; ++row) x[row] = ar[row];
      const float* pr = p + static_cast<size_t>(r) * kTile;
      for (int u = 0; u < kVecs; ++u) {
        F32xN pv = loadv(pr + kLanes * u);
        pin_register(pv);
        for (int row = 0; row < kRows; ++row) acc[row][u] += x[row] * pv;
      }
    }
    for (int row = 0; row < kRows; ++row)
      for (int u = 0; u < kVecs; ++u) storev(ct + static_cast<size_t>(d + row) * kTile + kLanes * u, acc[row][u]);
  }
  for (; d < D; ++d) {
    F32xN acc[kVecs];
    for (int u = 0; u < kVecs; ++u) acc[u] = loadv(ct + static_cast<size_t>(d) * kTile + kLanes * u);
    for (int r = 0; r < n; ++r) {
      const float x = a[r * a_stride + d];
      for (int u = 0; u < kVecs; ++u) acc[u] += x * loadv(p + static_cast<size_t>(r) * kTile + kLanes * u);
    }
    for (int u = 0; u < kVecs; ++u) storev(ct + static_cast<size_t>(d) * kTile + kLanes * u, acc[u]);
  }
}

// Visible key sets of the (up to kTile) consecutive query rows of one tile. Rows past n_rows are
// padding and see nothing.
struct TileRows {
  int n_rows = 0;
  int32_t sink_end[kTile], lo[kTile], hi[kTile];
  int32_t max_sink_end = 0, min_lo = 0, max_hi = 0;  // union of the rows' sets: [0,max_sink_end) + [min_lo,max_hi)

  void init(const AttentionParams& p, int64_t pos0, int n, int Tk) {
    n_rows = n;
    max_sink_end = 0;
    min_lo = Tk;
    max_hi = 0;
    for (int r = 0; r < kTile; ++r) {
      VisibleKeys vk;
      if (r < n) vk = visible_keys(p, pos0 + r, Tk);
      sink_end[r] = static_cast<int32_t>(vk.sink_end);
      lo[r] = static_cast<int32_t>(vk.lo);
      hi[r] = static_cast<int32_t>(vk.hi);
      max_sink_end = std::max(max_sink_end, sink_end[r]);
      if (lo[r] < hi[r]) {
        min_lo = std::min(min_lo, lo[r]);
        max_hi = std::max(max_hi, hi[r]);
      }
    }
    if (max_hi == 0) min_lo = 0;
  }

  enum class Cover { kNone, kPartial, kFull };

  // How the key chunk [j0, j1) meets the rows: nobody sees it, everybody sees all of it, or mixed.
  Cover classify(int j0, int j1) const {
    bool any = false, all = true;
    for (int r = 0; r < n_rows; ++r) {
      const bool full = j1 <= sink_end[r] || (lo[r] <= j0 && j1 <= hi[r]);
      const bool some = j0 < sink_end[r] || (std::max(j0, lo[r]) < std::min(j1, hi[r]));
      any |= some;
      all &= full;
    }
    if (!any) return Cover::kNone;
    return all ? Cover::kFull : Cover::kPartial;
  }

  // st[jj][r] (keys major, rows along the panel) := -inf where key j0 + jj is invisible to row r.
  void mask_keys_major(int j0, int nk, float* st) const {
    for (int jj = 0; jj < nk; ++jj) {
      const int32_t j = j0 + jj;
      float* s = st + static_cast<size_t>(jj) * kTile;
#pragma omp simd
      for (int r = 0; r < kTile; ++r) {
        const bool vis = j < sink_end[r] || (j >= lo[r] && j < hi[r]);
        s[r] = vis ? s[r] : kNegInf;
      }
    }
  }

  // s[r][jj] (rows major, keys along the panel) := -inf where key j0 + jj is invisible to row r or
  // jj >= nk (padding keys of a short tile).
  void mask_rows_major(int j0, int nk, float* s) const {
    for (int r = 0; r < n_rows; ++r) {
      const int32_t se = sink_end[r], l = lo[r], h = std::min<int32_t>(hi[r], j0 + nk);
      const int32_t se_c = std::min<int32_t>(se, j0 + nk);
      float* row = s + static_cast<size_t>(r) * kTile;
#pragma omp simd
      for (int jj = 0; jj < kTile; ++jj) {
        const int32_t j = j0 + jj;
        const bool vis = j < se_c || (j >= l && j < h);
        row[jj] = vis ? row[jj] : kNegInf;
      }
    }
  }
};

// Query rows (or keys) split into tiles of at most kTile that never straddle a layout block:
// without a layout the whole range is one span.
struct Tiling {
  int len = 0, span = 0, per_span = 0, count = 0;

  Tiling(int length, int block) : len(length) {
    span = block > 0 ? block : std::max(length, 1);
    per_span = ceil_div(span, kTile);
    count = ceil_div(std::max(length, 1), span) * per_span;
  }
  // Tile t covers [*t0, *t1) (possibly empty) inside block *blk.
  void tile(int t, int* t0, int* t1, int* blk) const {
    *blk = t / per_span;
    const int64_t begin = static_cast<int64_t>(*blk) * span + static_cast<int64_t>(t % per_span) * kTile;
    const int64_t end = std::min<int64_t>({begin + kTile, static_cast<int64_t>(*blk + 1) * span, len});
    *t0 = static_cast<int>(std::min<int64_t>(begin, len));
    *t1 = static_cast<int>(std::max<int64_t>(end, *t0));
  }
};

// Calls fn(j0, j1) for the pieces of [a, b) cut at multiples of kTile.
template <class Fn>
inline void for_each_aligned_chunk(int a, int b, Fn&& fn) {
  for (int j = a; j < b;) {
    const int e = std::min(b, (j / kTile + 1) * kTile);
    fn(j, e);
    j = e;
  }
}

// Calls fn(j0, j1) for the key chunks a query tile must visit, in increasing order: the union of
// its rows' visible sets, intersected with the allowed key blocks [kb_begin, kb_end) when sparse,
// cut at multiples of kTile.
template <class Fn>
inline void for_each_key_chunk(const TileRows& rows, int Tk, int block_k, bool sparse, const int32_t* kb_begin,
                               const int32_t* kb_end, Fn&& fn) {
  int a0 = 0, a1 = rows.max_sink_end, b0 = rows.min_lo, b1 = rows.max_hi;
  if (b0 >= b1) b0 = b1 = a1;
  if (a1 >= b0) {  // overlapping or touching: one interval
    a1 = std::max(a1, b1);
    b0 = b1 = a1;
  }
  auto visit = [&](int lo, int hi) {
    if (lo < hi) for_each_aligned_chunk(lo, hi, fn);
  };
  if (!sparse) {
    visit(a0, a1);
    visit(b0, b1);
    return;
  }
  for (const int32_t* kb = kb_begin; kb != kb_end; ++kb) {
    const int64_t s = static_cast<int64_t>(*kb) * block_k;
    const int64_t e = std::min<int64_t>(s + block_k, Tk);
    visit(static_cast<int>(std::max<int64_t>(s, a0)), static_cast<int>(std::min<int64_t>(e, a1)));
    visit(static_cast<int>(std::max<int64_t>(s, b0)), static_cast<int>(std::min<int64_t>(e, b1)));
  }
}

// One online-softmax step over a chunk of nk keys, scores keys-major st[jj][r] in log2 units.
// Turns st into probabilities relative to the new running max, updates m, l and returns in alpha
// the factor by which the rows' output accumulators must be rescaled.
inline void online_softmax_step(float* __restrict st, int nk, float* __restrict m, float* __restrict l,
                                float* __restrict alpha) {
  float mt[kTile], mu[kTile], rs[kTile];
#pragma omp simd
  for (int r = 0; r < kTile; ++r) {
    mt[r] = kNegInf;
    rs[r] = 0.f;
  }
  for (int jj = 0; jj < nk; ++jj) {
    const float* s = st + static_cast<size_t>(jj) * kTile;
#pragma omp simd
    for (int r = 0; r < kTile; ++r) mt[r] = s[r] > mt[r] ? s[r] : mt[r];
  }
#pragma omp simd
  for (int r = 0; r < kTile; ++r) {
    const float mn = mt[r] > m[r] ? mt[r] : m[r];
    mu[r] = mn == kNegInf ? 0.f : mn;  // a row with nothing seen yet: all its p are exactly 0
    alpha[r] = exp2_softmax(m[r] - mu[r]);
    m[r] = mn;
  }
  for (int jj = 0; jj < nk; ++jj) {
    float* s = st + static_cast<size_t>(jj) * kTile;
#pragma omp simd
    for (int r = 0; r < kTile; ++r) {
      s[r] = exp2_softmax(s[r] - mu[r]);
      rs[r] += s[r];
    }
  }
#pragma omp simd
  for (int r = 0; r < kTile; ++r) l[r] = l[r] * alpha[r] + rs[r];
}

// ot[d][r] *= alpha[r].
inline void rescale_panel(float* __restrict ot, int D, const float* __restrict alpha) {
  for (int d = 0; d < D; ++d) {
    float* row = ot + static_cast<size_t>(d) * kTile;
#pragma omp simd
    for (int r = 0; r < kTile; ++r) row[r] *= alpha[r];
  }
}

}  // namespace sw::kernels::attention::detail
