// Small dense building blocks for the gated-linear-attention chunk kernels: a vectorisable exp and
// a register-blocked tile product. Internal to kernels/linear/gla_*; plain loops that GCC
// vectorises at -O3 -march=native (measured ~180 GFLOP/s on one Zen5 core for 64x64x64).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace sw::kernels::gla_detail {

// exp(x) for x <= ~88 (our arguments are always <= 0), flushed to exactly 0 below -87 so that
// strong decays produce zeros rather than denormals. Cody-Waite reduction + degree-7 Taylor on
// |r| <= ln2/2: max relative error 1.3 ulp (checked against std::exp over [-87, 1]). Branch-free
// so that loops calling it vectorise.
inline float exp_nonpos(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float xc = x < -87.5f ? -87.5f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const int32_t ni = std::bit_cast<int32_t>(t) - 0x4B400000;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float y = p * std::bit_cast<float>((ni + 127) << 23);
  return x < -87.0f ? 0.0f : y;
}

// Which part of A(m, p) is known to be zero, so whole row blocks can skip it. The caller
// guarantees the zeros inside the diagonal blocks (the ranges below are per row block).
enum class TileTri {
  kFull,
  kLowerA,  // A(m, p) == 0 for p > m: p < m_block_end only
  kUpperA,  // A(m, p) == 0 for p < m: p >= m_block_begin only
};

constexpr int kTileRows = 8;   // rows of C held in registers
constexpr int kTileCols = 64;  // columns of C held in registers (4 zmm per row)

// C[m, n] (+)= sum_p A(m, p) B[p, n] over one MR x NR register tile, p in [p_lo, p_hi).
template <int MR, int NR>
inline void tile_micro(int p_lo, int p_hi, const float* __restrict a, ptrdiff_t a_rs,
                       ptrdiff_t a_cs, const float* __restrict b, ptrdiff_t ldb,
                       float* __restrict c, ptrdiff_t ldc, bool accumulate) {
  float acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma omp simd
    for (int n = 0; n < NR; ++n) acc[m][n] = accumulate ? c[m * ldc + n] : 0.0f;
  }
  for (int p = p_lo; p < p_hi; ++p) {
    const float* __restrict bp = b + p * ldb;
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const float am = a[m * a_rs + p * a_cs];
#pragma omp simd
      for (int n = 0; n < NR; ++n) acc[m][n] += am * bp[n];
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma omp simd
    for (int n = 0; n < NR; ++n) c[m * ldc + n] = acc[m][n];
  }
}

// Narrow remainder (< 8 columns): streams C rows, no register tile.
inline void tile_micro_tail(int mr, int nw, int p_lo, int p_hi, const float* __restrict a,
                            ptrdiff_t a_rs, ptrdiff_t a_cs, const float* __restrict b,
                            ptrdiff_t ldb, float* __restrict c, ptrdiff_t ldc, bool accumulate) {
  for (int m = 0; m < mr; ++m) {
    float* __restrict cm = c + m * ldc;
    if (!accumulate)
      for (int n = 0; n < nw; ++n) cm[n] = 0.0f;
    for (int p = p_lo; p < p_hi; ++p) {
      const float am = a[m * a_rs + p * a_cs];
      const float* __restrict bp = b + p * ldb;
#pragma omp simd
      for (int n = 0; n < nw; ++n) cm[n] += am * bp[n];
    }
  }
}

template <int NR>
inline void tile_micro_rows(int mr, int p_lo, int p_hi, const float* a, ptrdiff_t a_rs,
                            ptrdiff_t a_cs, const float* b, ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                            bool accumulate) {
  switch (mr) {
    case 8: tile_micro<8, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
    case 7: tile_micro<7, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
    case 6: tile_micro<6, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
    case 5: tile_micro<5, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
    case 4: tile_micro<4, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
    case 3: tile_micro<3, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
    case 2: tile_micro<2, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
    default: tile_micro<1, NR>(p_lo, p_hi, a, a_rs, a_cs, b, ldb, c, ldc, accumulate); break;
  }
}

// C[M x N] (+)= A(M x P) B[P x N], with A(m, p) = a[m * a_rs + p * a_cs] (so a transposed A is
// just swapped strides), B and C row-major with unit column stride. accumulate = false overwrites
// C (including rows whose p range is empty under tri).
inline void tile_gemm(int64_t M, int64_t N, int64_t P, const float* a, ptrdiff_t a_rs,
                      ptrdiff_t a_cs, const float* b, ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                      bool accumulate, TileTri tri = TileTri::kFull) {
  for (int64_t m0 = 0; m0 < M; m0 += kTileRows) {
    const int mr = static_cast<int>(std::min<int64_t>(kTileRows, M - m0));
    int p_lo = 0, p_hi = static_cast<int>(P);
    if (tri == TileTri::kLowerA) p_hi = static_cast<int>(std::min<int64_t>(P, m0 + mr));
    if (tri == TileTri::kUpperA) p_lo = static_cast<int>(std::min<int64_t>(P, m0));
    const float* am = a + m0 * a_rs;
    float* cm = c + m0 * ldc;
    int64_t n0 = 0;
    for (; n0 + kTileCols <= N; n0 += kTileCols)
      tile_micro_rows<kTileCols>(mr, p_lo, p_hi, am, a_rs, a_cs, b + n0, ldb, cm + n0, ldc,
                                 accumulate);
    for (; n0 + 16 <= N; n0 += 16)
      tile_micro_rows<16>(mr, p_lo, p_hi, am, a_rs, a_cs, b + n0, ldb, cm + n0, ldc, accumulate);
    if (n0 + 8 <= N) {
      tile_micro_rows<8>(mr, p_lo, p_hi, am, a_rs, a_cs, b + n0, ldb, cm + n0, ldc, accumulate);
      n0 += 8;
    }
    if (n0 < N)
      tile_micro_tail(mr, static_cast<int>(N - n0), p_lo, p_hi, am, a_rs, a_cs, b + n0, ldb,
                      cm + n0, ldc, accumulate);
  }
}

// dst[c][r] = src[r][c] for an R x C block (row strides given).
inline void tile_transpose(int64_t R, int64_t C, const float* __restrict src, ptrdiff_t lds,
                           float* __restrict dst, ptrdiff_t ldd) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) dst[c * ldd + r] = src[r * lds + c];
}

}  // namespace sw::kernels::gla_detail
