// Work-efficient (Blelloch) scan of the first-order linear recurrence h_i = a_i * h_{i-1} + b_i,
// elementwise over W independent lanes. Private helper of src/kernels/scan.
//
// The scan elements are pairs e_i = (a_i, b_i) with the associative operator
//   (a1, b1) o (a2, b2) = (a1 * a2, a2 * b1 + b2)      (e1 earlier in time than e2),
// so h_i = b-part of (h_{-1} as (1, h_{-1})) o e_0 o ... o e_i. Up-sweep builds subtree totals in
// place, the root's prefix is seeded with the carried state, and the down-sweep hands every
// subtree the state entering it. Only b-parts of prefixes are ever needed (a prefix's a-part is
// never read), which saves half of the down-sweep. Depth 2 log2(L), work ~3 L combines per lane.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/error.h"

namespace sw::kernels::scan::detail {

// a, b: [L, W] row-major, L a power of two (pad with a = 1, b = 0). carry: [W], the state before
// row 0 on entry and after row L-1 on exit. On exit b row i holds h_i; a is clobbered.
inline void blelloch_scan(float* __restrict a, float* __restrict b, int64_t L, int64_t W,
                          float* __restrict carry) {
  SW_DASSERT(L > 0 && (L & (L - 1)) == 0);
  // Up-sweep: the right node of each pair becomes the total of its subtree.
  for (int64_t stride = 1; stride < L; stride *= 2) {
    for (int64_t i = 2 * stride - 1; i < L; i += 2 * stride) {
      const float* al = a + (i - stride) * W;
      const float* bl = b + (i - stride) * W;
      float* ar = a + i * W;
      float* br = b + i * W;
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) {
        br[w] = std::fma(ar[w], bl[w], br[w]);
        ar[w] = al[w] * ar[w];
      }
    }
  }
  // The root holds the whole block's total; its prefix is the carried state.
  {
    const float* aroot = a + (L - 1) * W;
    float* broot = b + (L - 1) * W;
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) {
      const float last = std::fma(aroot[w], carry[w], broot[w]);
      broot[w] = carry[w];
      carry[w] = last;
    }
  }
  // Down-sweep: a right node holds the state entering its subtree; the left child inherits it and
  // the right child gets it advanced through the left child's total (whose a is still intact).
  for (int64_t stride = L / 2; stride >= 1; stride /= 2) {
    for (int64_t i = 2 * stride - 1; i < L; i += 2 * stride) {
      const float* al = a + (i - stride) * W;
      float* bl = b + (i - stride) * W;
      float* br = b + i * W;
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) {
        const float prefix = br[w];
        const float left_total = bl[w];
        bl[w] = prefix;
        br[w] = std::fma(al[w], prefix, left_total);
      }
    }
  }
  // b row i now holds the exclusive prefix h_{i-1}; shift by one row to get h_i.
  for (int64_t i = 0; i + 1 < L; ++i) {
    float* dst = b + i * W;
    const float* src = b + (i + 1) * W;
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) dst[w] = src[w];
  }
  float* blast = b + (L - 1) * W;
#pragma omp simd
  for (int64_t w = 0; w < W; ++w) blast[w] = carry[w];
}

inline int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

}  // namespace sw::kernels::scan::detail
