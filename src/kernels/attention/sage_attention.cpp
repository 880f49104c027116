#include "kernels/attention/sage_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/attention/attention_tiles.h"

#if defined(__AVX2__) || ((defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__))
#include <immintrin.h>
#endif
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define SW_SAGE_VNNI 1  // compiled with a target attribute, chosen at run time
#endif

namespace sw::kernels::attention {
namespace {

using namespace detail;

constexpr float kInt8Max = 127.f;

// std::round semantics (ties away from zero) built on rint (ties to even), the only rounding GCC
// vectorises under the default -ftrapping-math: at an exact tie x - rint(x) = +-0.5 and x + 0.5 *
// sign(x) is exact and away from zero.
inline float round_half_away(float x) {
  const float r = __builtin_rintf(x);
  const float away = x + std::copysign(0.5f, x);
  return std::fabs(x - r) == 0.5f ? away : r;
}

// The int8 code of x with quantisation step `step` (|x| <= 127 * step by construction of the
// step; the clamp only guards the int8 range).
inline int8_t int8_code(float x, float step) {
  const float c = round_half_away(x / step);
  return static_cast<int8_t>(std::min(std::max(c, -kInt8Max), kInt8Max));
}

// One symmetric int8 scale for values of largest magnitude max_abs (1 when all are zero).
float int8_scale(float max_abs) { return max_abs > 0.f ? max_abs / kInt8Max : 1.f; }

// ---------------------------------------------------------------------------------------------
// Packed int8 operands.
//
// Keys (prepared once per call, shared by every query tile): per (b, kv head) the codes of the
// smoothed keys row-major, kc[j][0:Dp] (Dp = Dk rounded up to a multiple of 4, zero-padded), one
// scale per aligned 64-key block, and per key 128 * sum_d k8[j][d] (the VNNI offset correction).
// Query tile: the codes in groups of 4 dimensions, q4[g][r][0:4] = q8[r][4g .. 4g+3] for 64 rows
// (rows past the tile and dimensions past Dk are 0), so that one 32-byte (AVX2) or 64-byte (AVX-512)
// load holds 4 dimensions of 8 or 16 consecutive rows, and a key's 4 codes are one broadcast int32.
// Every micro-kernel below writes st[jj][r] = float(q8[r] . k8[j0 + jj]) * dequant for jj < nk and
// all 64 r: the integer dot product is exact (|.| <= Dk * 127^2 < 2^24, so also exact as a float)
// and identical on every path, hence so are the scores.

struct KeyCodes {
  const int8_t* codes = nullptr;   // [B * Hkv][n_blocks * kTile][Dp]
  const float* scales = nullptr;   // [B * Hkv][n_blocks]
  const int32_t* sum128 = nullptr; // [B * Hkv][n_blocks * kTile]
  const float* fcodes = nullptr;   // [B * Hkv][n_blocks * kTile][Df]: codes of dims [Di, Dk) as floats (AVX2)
  int Dp = 0, n_blocks = 0, Di = 0, Df = 0;
};

inline int padded_dim(int Dk) { return (Dk + 3) / 4 * 4; }

void qk_scalar(const int8_t* __restrict q4, const int8_t* __restrict kc, int Dp, int nk, float dequant,
               float* __restrict st) {
  for (int jj = 0; jj < nk; ++jj) {
    const int8_t* kr = kc + static_cast<size_t>(jj) * Dp;
    int32_t acc[kTile] = {};
    for (int g = 0; g < Dp / 4; ++g) {
      const int8_t* qg = q4 + static_cast<size_t>(g) * 4 * kTile;
      for (int i = 0; i < 4; ++i) {
        const int32_t kv = kr[4 * g + i];
        for (int r = 0; r < kTile; ++r) acc[r] += static_cast<int32_t>(qg[4 * r + i]) * kv;
      }
    }
    float* s = st + static_cast<size_t>(jj) * kTile;
    for (int r = 0; r < kTile; ++r) s[r] = static_cast<float>(acc[r]) * dequant;
  }
}

#if defined(__AVX2__)
// AVX2 without VNNI: vpmaddubsw multiplies u8 x s8 pairs, so the query codes enter as |q8| (qa4)
// and their signs move onto the key codes (vpsignb); |q|, |k| <= 127 keep the pair sums
// (<= 2 * 127^2 = 32258) below the int16 saturation; vpmaddwd with ones widens to int32.
inline __m256i dot4(__m256i acc, __m256i qa, __m256i qv, __m256i kb, __m256i ones) {
  const __m256i pairs = _mm256_maddubs_epi16(qa, _mm256_sign_epi8(kb, qv));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
}

inline __m256i broadcast4(const int8_t* p) {
  int32_t w;
  std::memcpy(&w, p, 4);
  return _mm256_set1_epi32(w);
}

// Zen-class AVX2 cores run vpmaddubsw/vpmaddwd on one vector pipe but FMAs on two, so int8 alone
// is no faster than fp32 FMAs there. The products are therefore split by dimension: dimensions
// [0, Di) go through the int8 pipe, [Di, Dk) through FMAs on integer-valued float codes (exact:
// every partial sum is an integer below 2^24), interleaved one int8 group (4 dimensions) to two
// float dimensions so that both pipes stay busy. The two exact partial sums add exactly, so the
// scores equal the all-integer ones bit for bit.
inline int avx2_int_dims(int Dk) { return (Dk - 2 * (Dk / 6)) / 4 * 4; }

void qk_avx2(const int8_t* __restrict q4, const int8_t* __restrict qa4, const float* __restrict qf,
             const int8_t* __restrict kc, int Dp, const float* __restrict kf, int Di, int Df, int nk, float dequant,
             float* __restrict st) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256 dq = _mm256_set1_ps(dequant);
  const int Gi = Di / 4;
  for (int jj = 0; jj < nk; ++jj) {
    const int8_t* kr = kc + static_cast<size_t>(jj) * Dp;
    const float* kfr = kf + static_cast<size_t>(jj) * Df;
    for (int half = 0; half < 2; ++half) {
      __m256i ai[4];
      __m256 af[4];
      for (int u = 0; u < 4; ++u) {
        ai[u] = _mm256_setzero_si256();
        af[u] = _mm256_setzero_ps();
      }
      auto int_group = [&](int g) {
        const __m256i kb = broadcast4(kr + 4 * g);
        const size_t off = static_cast<size_t>(g) * 4 * kTile + 128 * half;
        for (int u = 0; u < 4; ++u) {
          const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q4 + off + 32 * u));
          const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qa4 + off + 32 * u));
          ai[u] = dot4(ai[u], qa, qv, kb, ones);
        }
      };
      auto float_dim = [&](int d) {
        const __m256 b = _mm256_broadcast_ss(kfr + d);
        const float* qd = qf + static_cast<size_t>(d) * kTile + 32 * half;
        for (int u = 0; u < 4; ++u) af[u] = _mm256_fmadd_ps(b, _mm256_loadu_ps(qd + 8 * u), af[u]);
      };
      int g = 0, d = 0;
      for (; g < Gi && d + 2 <= Df; ++g, d += 2) {
        int_group(g);
        float_dim(d);
        float_dim(d + 1);
      }
      for (; g < Gi; ++g) int_group(g);
      for (; d < Df; ++d) float_dim(d);
      float* s = st + static_cast<size_t>(jj) * kTile + 32 * half;
      for (int u = 0; u < 4; ++u)
        _mm256_storeu_ps(s + 8 * u, _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(ai[u]), af[u]), dq));
    }
  }
}

// ot[d][0:kTile] = ot[d][0:kTile] * alpha + sum_r v[r * v_stride + d] * p[r][0:kTile]: the online
// softmax rescale fused with P.V (fp32), 2 output rows x 32 lanes of accumulators in registers so
// that each p load feeds two FMAs. Same roundings, in the same order, as rescale_panel followed by
// panel_accumulate.
void pv_avx2(const float* __restrict v, size_t v_stride, int nk, const float* __restrict p, int Dv,
             const float* __restrict alpha, float* __restrict ot) {
  int d = 0;
  for (; d + 2 <= Dv; d += 2) {
    float* o0 = ot + static_cast<size_t>(d) * kTile;
    float* o1 = o0 + kTile;
    for (int half = 0; half < 2; ++half) {
      const int c = 32 * half;
      __m256 a0[4], a1[4];
      for (int u = 0; u < 4; ++u) {
        const __m256 al = _mm256_loadu_ps(alpha + c + 8 * u);
        a0[u] = _mm256_mul_ps(_mm256_loadu_ps(o0 + c + 8 * u), al);
        a1[u] = _mm256_mul_ps(_mm256_loadu_ps(o1 + c + 8 * u), al);
      }
      const float* vr = v + d;
      const float* pr = p + c;
      for (int r = 0; r < nk; ++r, vr += v_stride, pr += kTile) {
        const __m256 b0 = _mm256_broadcast_ss(vr), b1 = _mm256_broadcast_ss(vr + 1);
        for (int u = 0; u < 4; ++u) {
          const __m256 pv = _mm256_loadu_ps(pr + 8 * u);
          a0[u] = _mm256_fmadd_ps(b0, pv, a0[u]);
          a1[u] = _mm256_fmadd_ps(b1, pv, a1[u]);
        }
      }
      for (int u = 0; u < 4; ++u) {
        _mm256_storeu_ps(o0 + c + 8 * u, a0[u]);
        _mm256_storeu_ps(o1 + c + 8 * u, a1[u]);
      }
    }
  }
  for (; d < Dv; ++d) {
    float* o0 = ot + static_cast<size_t>(d) * kTile;
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_mul_ps(_mm256_loadu_ps(o0 + 8 * u), _mm256_loadu_ps(alpha + 8 * u));
    for (int r = 0; r < nk; ++r) {
      const __m256 b = _mm256_broadcast_ss(v + r * v_stride + d);
      for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(b, _mm256_loadu_ps(p + static_cast<size_t>(r) * kTile + 8 * u), acc[u]);
    }
    for (int u = 0; u < 8; ++u) _mm256_storeu_ps(o0 + 8 * u, acc[u]);
  }
}

// 2^x for x <= 0 (softmax arguments; x > 0 never occurs as x = s - max): 0 below -125 (so -inf and
// far-masked entries vanish exactly), otherwise 2^round(x) (exponent bits) times a degree-7 Taylor
// polynomial of 2^f, |f| <= 1/2; relative error <= 7e-8, as exp2_softmax.
inline __m256 exp2_avx2(__m256 x) {
  const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-125.f), _CMP_GE_OQ);
  const __m256 xc = _mm256_max_ps(x, _mm256_set1_ps(-125.f));
  const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(xc, n);
  __m256 p = _mm256_set1_ps(1.5252733804059841e-05f);                    // ln2^7 / 7!
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530393381609e-04f));   // ln2^6 / 6!
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-03f));   // ln2^5 / 5!
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-03f));   // ln2^4 / 4!
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-02f));   // ln2^3 / 3!
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-01f));   // ln2^2 / 2
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-01f));   // ln2
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256 r = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  return _mm256_and_ps(r, keep);
}

// online_softmax_step with intrinsics (the generic loop spends ~3x longer in its exp): st[jj][r]
// keys-major scores in log2 units become probabilities relative to the new running max; m, l
// updated; alpha = the rescale factor of the rows' output accumulators.
void softmax_avx2(float* __restrict st, int nk, float* __restrict m, float* __restrict l, float* __restrict alpha) {
  const __m256 neg_inf = _mm256_set1_ps(kNegInf);
  for (int u = 0; u < kTile / 8; ++u) {
    float* col = st + 8 * u;
    __m256 mt = neg_inf;
    for (int jj = 0; jj < nk; ++jj) mt = _mm256_max_ps(mt, _mm256_loadu_ps(col + static_cast<size_t>(jj) * kTile));
    const __m256 mo = _mm256_loadu_ps(m + 8 * u);
    const __m256 mn = _mm256_max_ps(mt, mo);
    // A row with nothing seen yet: all its p are exactly 0 (max -inf; subtract 0 instead).
    const __m256 mu = _mm256_andnot_ps(_mm256_cmp_ps(mn, neg_inf, _CMP_EQ_OQ), mn);
    _mm256_storeu_ps(alpha + 8 * u, exp2_avx2(_mm256_sub_ps(mo, mu)));
    _mm256_storeu_ps(m + 8 * u, mn);
    __m256 rs0 = _mm256_setzero_ps(), rs1 = _mm256_setzero_ps();
    int jj = 0;
    for (; jj + 2 <= nk; jj += 2) {
      float* s0 = col + static_cast<size_t>(jj) * kTile;
      const __m256 p0 = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(s0), mu));
      const __m256 p1 = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(s0 + kTile), mu));
      _mm256_storeu_ps(s0, p0);
      _mm256_storeu_ps(s0 + kTile, p1);
      rs0 = _mm256_add_ps(rs0, p0);
      rs1 = _mm256_add_ps(rs1, p1);
    }
    if (jj < nk) {
      float* s0 = col + static_cast<size_t>(jj) * kTile;
      const __m256 p0 = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(s0), mu));
      _mm256_storeu_ps(s0, p0);
      rs0 = _mm256_add_ps(rs0, p0);
    }
    const __m256 lo = _mm256_loadu_ps(l + 8 * u);
    _mm256_storeu_ps(l + 8 * u, _mm256_fmadd_ps(lo, _mm256_loadu_ps(alpha + 8 * u), _mm256_add_ps(rs0, rs1)));
  }
}
#endif

#if defined(SW_SAGE_VNNI)
// AVX512-VNNI: vpdpbusd multiplies u8 x s8 quadruples into int32 without saturation. The query
// codes enter offset to unsigned, qu4 = q8 + 128 (padding rows hold 128), so the product is
// q8 . k8 + 128 * sum(k8), and the per-key correction sum128 is subtracted.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void qk_vnni(const uint8_t* __restrict qu4,
                                                                      const int8_t* __restrict kc,
                                                                      const int32_t* __restrict sum128, int Dp,
                                                                      int nk, float dequant, float* __restrict st) {
  const __m512 dq = _mm512_set1_ps(dequant);
  const int Dg = Dp / 4;
  for (int jj = 0; jj < nk; ++jj) {
    const int8_t* kr = kc + static_cast<size_t>(jj) * Dp;
    __m512i acc[4];
    for (int u = 0; u < 4; ++u) acc[u] = _mm512_setzero_si512();
    for (int g = 0; g < Dg; ++g) {
      int32_t kw;
      std::memcpy(&kw, kr + 4 * g, 4);
      const __m512i kb = _mm512_set1_epi32(kw);
      const uint8_t* qg = qu4 + static_cast<size_t>(g) * 4 * kTile;
      for (int u = 0; u < 4; ++u) acc[u] = _mm512_dpbusd_epi32(acc[u], _mm512_loadu_si512(qg + 64 * u), kb);
    }
    const __m512i corr = _mm512_set1_epi32(sum128[jj]);
    float* s = st + static_cast<size_t>(jj) * kTile;
    for (int u = 0; u < 4; ++u)
      _mm512_storeu_ps(s + 16 * u, _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_sub_epi32(acc[u], corr)), dq));
  }
}

bool cpu_has_vnni() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return has;
}
#endif

// ---------------------------------------------------------------------------------------------

// Per-(b, kv head) key means (f64 sums in token order, as the reference), then the codes of every
// aligned 64-key block of the smoothed keys.
void prepare_keys(const float* k, const AttentionDims& dm, bool smooth_k, float* k_mean, int8_t* codes,
                  float* scales, int32_t* sum128, float* fcodes, int Dp, int Di, int n_blocks) {
  const size_t k_stride = static_cast<size_t>(dm.Hkv) * dm.Dk;
  const int Dk = dm.Dk;
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < static_cast<int64_t>(dm.B) * dm.Hkv; ++bh) {
    const int b = static_cast<int>(bh / dm.Hkv), hk = static_cast<int>(bh % dm.Hkv);
    float* mean = k_mean + static_cast<size_t>(bh) * Dk;
    double* acc = scratch_doubles(0, static_cast<size_t>(Dk));
    std::fill(acc, acc + Dk, 0.0);
    if (smooth_k)
      for (int j = 0; j < dm.Tk; ++j) {
        const float* kr = k + (static_cast<size_t>(b) * dm.Tk + j) * k_stride + static_cast<size_t>(hk) * Dk;
        for (int d = 0; d < Dk; ++d) acc[d] += kr[d];
      }
    for (int d = 0; d < Dk; ++d) mean[d] = dm.Tk > 0 ? static_cast<float>(acc[d] / dm.Tk) : 0.f;
  }
  const int64_t n_items = static_cast<int64_t>(dm.B) * dm.Hkv * n_blocks;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t bh = item / n_blocks;
    const int blk = static_cast<int>(item % n_blocks);
    const int b = static_cast<int>(bh / dm.Hkv), hk = static_cast<int>(bh % dm.Hkv);
    const float* mean = k_mean + static_cast<size_t>(bh) * Dk;
    const int a = blk * kTile, nb = std::min(kTile, dm.Tk - a);
    const float* kb = k + static_cast<size_t>(b) * dm.Tk * k_stride + static_cast<size_t>(hk) * Dk;
    float k_absmax = 0.f;
    for (int jj = 0; jj < nb; ++jj) {
      const float* kr = kb + (a + jj) * k_stride;
#pragma omp simd reduction(max : k_absmax)
      for (int d = 0; d < Dk; ++d) k_absmax = std::max(k_absmax, std::fabs(kr[d] - mean[d]));
    }
    const float sk = int8_scale(k_absmax);
    scales[bh * n_blocks + blk] = sk;
    int8_t* cb = codes + (static_cast<size_t>(bh) * n_blocks * kTile + a) * Dp;
    int32_t* sb = sum128 + static_cast<size_t>(bh) * n_blocks * kTile + a;
    std::memset(cb, 0, static_cast<size_t>(kTile) * Dp);
    for (int jj = 0; jj < kTile; ++jj) sb[jj] = 0;
    const int Df = Dk - Di;
    float* fb = fcodes ? fcodes + (static_cast<size_t>(bh) * n_blocks * kTile + a) * Df : nullptr;
    if (fb) std::fill(fb, fb + static_cast<size_t>(kTile) * Df, 0.f);
    for (int jj = 0; jj < nb; ++jj) {
      const float* kr = kb + (a + jj) * k_stride;
      int8_t* c = cb + static_cast<size_t>(jj) * Dp;
      int32_t sum = 0;
      for (int d = 0; d < Dk; ++d) {
        c[d] = int8_code(kr[d] - mean[d], sk);
        sum += c[d];
      }
      sb[jj] = 128 * sum;
      if (fb)
        for (int d = Di; d < Dk; ++d) fb[static_cast<size_t>(jj) * Df + d - Di] = c[d];
    }
  }
}

void sage_tile(const float* q, const float* v, const float* k_mean, const KeyCodes& kcodes, const AttentionDims& dm,
               const AttentionParams& p, const Tiling& qtiles, SageIsa isa, int b, int h, int t, float* o, float* lse) {
  int i0, i1, qb;
  qtiles.tile(t, &i0, &i1, &qb);
  if (i0 >= i1) return;
  const int n = i1 - i0, Dk = dm.Dk, Dv = dm.Dv, Dp = kcodes.Dp;
  const int group = dm.Hq / dm.Hkv, hk = h / group;
  const size_t q_stride = static_cast<size_t>(dm.Hq) * Dk, v_stride = static_cast<size_t>(dm.Hkv) * Dv,
               o_stride = static_cast<size_t>(dm.Hq) * Dv;
  const size_t code_floats = (static_cast<size_t>(Dp) * kTile + 3) / 4;  // one [Dp/4][kTile][4] int8 panel
  const int Di = kcodes.Di, Df = kcodes.Df;
  float* buf = scratch_floats(0, static_cast<size_t>(Dk + Dv + kTile + Df) * kTile + 5 * kTile + 2 * code_floats);
  float* qx = buf;                                    // [kTile][Dk] scaled q rows
  float* st = qx + static_cast<size_t>(kTile) * Dk;   // [kTile keys][kTile rows]
  float* ot = st + kTile * kTile;                     // [Dv][kTile]
  float* m = ot + static_cast<size_t>(Dv) * kTile;
  float* l = m + kTile;
  float* alpha = l + kTile;
  float* shift = alpha + kTile;  // q . mean(k) in log2 units, per row
  float* inv = shift + kTile;
  int8_t* q4 = reinterpret_cast<int8_t*>(inv + kTile);                    // codes, [Dp/4][kTile][4]
  int8_t* q4b = reinterpret_cast<int8_t*>(inv + kTile + code_floats);     // |codes| or codes + 128
  float* qf = inv + kTile + 2 * code_floats;                              // [Df][kTile] codes of dims [Di, Dk)

  const float qscale = effective_scale(p, Dk) * kLog2e;
  const float* q0 = q + (static_cast<size_t>(b) * dm.Tq + i0) * q_stride + static_cast<size_t>(h) * Dk;
  const float* mean = k_mean + (static_cast<size_t>(b) * dm.Hkv + hk) * Dk;
  float q_absmax = 0.f;
  for (int r = 0; r < n; ++r) {
    const float* qr = q0 + r * q_stride;
    float* x = qx + static_cast<size_t>(r) * Dk;
    float dot = 0.f;
    for (int d = 0; d < Dk; ++d) {
      x[d] = qr[d] * qscale;
      q_absmax = std::max(q_absmax, std::fabs(x[d]));
      dot += x[d] * mean[d];
    }
    shift[r] = dot;
  }
  const float sq = int8_scale(q_absmax);
  std::memset(q4, 0, static_cast<size_t>(Dp) * kTile);
  for (int r = 0; r < n; ++r) {
    const float* x = qx + static_cast<size_t>(r) * Dk;
    for (int d = 0; d < Dk; ++d) q4[(static_cast<size_t>(d / 4) * kTile + r) * 4 + d % 4] = int8_code(x[d], sq);
  }
  if (isa == SageIsa::kAvx2) {
    for (int i = 0; i < Dp * kTile; ++i) q4b[i] = static_cast<int8_t>(q4[i] < 0 ? -q4[i] : q4[i]);
    for (int d = Di; d < Dk; ++d)
      for (int r = 0; r < kTile; ++r)
        qf[static_cast<size_t>(d - Di) * kTile + r] = q4[(static_cast<size_t>(d / 4) * kTile + r) * 4 + d % 4];
  }
  else if (isa == SageIsa::kAvx512Vnni)
    for (int i = 0; i < Dp * kTile; ++i) q4b[i] = static_cast<int8_t>(static_cast<uint8_t>(q4[i]) ^ 0x80u);

  TileRows rows;
  rows.init(p, p.q_offset + i0, n, dm.Tk);
  for (int r = 0; r < kTile; ++r) {
    // The learned sink competes with unsmoothed logits: shift it like them.
    m[r] = p.sink_logits ? p.sink_logits[h] * kLog2e - (r < n ? shift[r] : 0.f) : kNegInf;
    l[r] = p.sink_logits ? 1.f : 0.f;
  }
  std::memset(ot, 0, sizeof(float) * Dv * kTile);

  const size_t bh = static_cast<size_t>(b) * dm.Hkv + hk;
  const int8_t* kc = kcodes.codes + bh * kcodes.n_blocks * kTile * Dp;
  const float* ks = kcodes.scales + bh * kcodes.n_blocks;
  const int32_t* ksum = kcodes.sum128 + bh * kcodes.n_blocks * kTile;
  const float* kfc = kcodes.fcodes ? kcodes.fcodes + bh * kcodes.n_blocks * kTile * Df : nullptr;
  const float* vb = v + static_cast<size_t>(b) * dm.Tk * v_stride + static_cast<size_t>(hk) * Dv;
  bool sparse = p.layout.block_q > 0;
  const int32_t *blk_begin = nullptr, *blk_end = nullptr;
  if (sparse) layout_row(p.layout, ceil_div(dm.Tq, p.layout.block_q), b, h, dm.Hq, qb, &blk_begin, &blk_end);
  for_each_key_chunk(rows, dm.Tk, p.layout.block_k, sparse, blk_begin, blk_end, [&](int j0, int j1) {
    const TileRows::Cover cover = rows.classify(j0, j1);
    if (cover == TileRows::Cover::kNone) return;
    const int nk = j1 - j0;
    const float dequant = sq * ks[j0 / kTile];
    const int8_t* kj = kc + static_cast<size_t>(j0) * Dp;
    switch (isa) {
#if defined(__AVX2__)
      case SageIsa::kAvx2:
        qk_avx2(q4, q4b, qf, kj, Dp, kfc + static_cast<size_t>(j0) * Df, Di, Df, nk, dequant, st);
        break;
#endif
#if defined(SW_SAGE_VNNI)
      case SageIsa::kAvx512Vnni:
        qk_vnni(reinterpret_cast<const uint8_t*>(q4b), kj, ksum + j0, Dp, nk, dequant, st);
        break;
#endif
      default: qk_scalar(q4, kj, Dp, nk, dequant, st); break;
    }
    if (cover == TileRows::Cover::kPartial) rows.mask_keys_major(j0, nk, st);
#if defined(__AVX2__)
    softmax_avx2(st, nk, m, l, alpha);
    pv_avx2(vb + j0 * v_stride, v_stride, nk, st, Dv, alpha, ot);
#else
    online_softmax_step(st, nk, m, l, alpha);
    rescale_panel(ot, Dv, alpha);
    panel_accumulate(vb + j0 * v_stride, v_stride, nk, st, Dv, ot);
#endif
  });

  float* o0 = o + (static_cast<size_t>(b) * dm.Tq + i0) * o_stride + static_cast<size_t>(h) * Dv;
  for (int r = 0; r < n; ++r) inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
  for (int r = 0; r < n; ++r)
    for (int d = 0; d < Dv; ++d) o0[r * o_stride + d] = ot[static_cast<size_t>(d) * kTile + r] * inv[r];
  if (lse) {
    float* lse_row = lse + (static_cast<size_t>(b) * dm.Hq + h) * dm.Tq + i0;
    for (int r = 0; r < n; ++r)
      lse_row[r] = l[r] > 0.f ? (m[r] + std::log2(l[r]) + shift[r]) * kLn2 : kEmptyRowLse;
  }
}

}  // namespace

bool sage_isa_supported(SageIsa isa) {
  switch (isa) {
    case SageIsa::kAuto:
    case SageIsa::kScalar: return true;
    case SageIsa::kAvx2:
#if defined(__AVX2__)
      return true;
#else
      return false;
#endif
    case SageIsa::kAvx512Vnni:
#if defined(SW_SAGE_VNNI)
      return cpu_has_vnni();
#else
      return false;
#endif
  }
  return false;
}

SageIsa sage_resolve_isa(SageIsa isa) {
  if (isa != SageIsa::kAuto) return isa;
  if (sage_isa_supported(SageIsa::kAvx512Vnni)) return SageIsa::kAvx512Vnni;
  if (sage_isa_supported(SageIsa::kAvx2)) return SageIsa::kAvx2;
  return SageIsa::kScalar;
}

const char* sage_isa_name(SageIsa isa) {
  switch (isa) {
    case SageIsa::kAuto: return "auto";
    case SageIsa::kScalar: return "scalar";
    case SageIsa::kAvx2: return "avx2";
    case SageIsa::kAvx512Vnni: return "avx512vnni";
  }
  return "?";
}

void sage_attention_forward(const float* q, const float* k, const float* v, const AttentionDims& dims,
                            const AttentionParams& params, bool smooth_k, float* o, float* lse, SageIsa isa) {
  SW_DASSERT(dims.Hkv > 0 && dims.Hq % dims.Hkv == 0 && dims.Dk <= 1040);
  SW_CHECK(sage_isa_supported(isa), "sage_attention", "int8 path ", sage_isa_name(isa),
           " is not available in this build or on this CPU");
  isa = sage_resolve_isa(isa);
  if (dims.Tq == 0) return;
  // Caller's scratch slot 1: key means, block scales, VNNI corrections, then the key codes.
  KeyCodes kc;
  kc.Dp = padded_dim(dims.Dk);
  kc.n_blocks = ceil_div(std::max(dims.Tk, 1), kTile);
  const size_t bh = static_cast<size_t>(dims.B) * dims.Hkv, keys = bh * kc.n_blocks * kTile;
#if defined(__AVX2__)
  kc.Di = isa == SageIsa::kAvx2 ? avx2_int_dims(dims.Dk) : dims.Dk;
#else
  kc.Di = dims.Dk;
#endif
  kc.Df = dims.Dk - kc.Di;
  const size_t n_mean = bh * dims.Dk, n_scale = bh * kc.n_blocks, n_sum = keys, n_float = keys * kc.Df,
               n_codes = (keys * kc.Dp + 3) / 4;
  float* slot = scratch_floats(1, n_mean + n_scale + n_sum + n_float + n_codes);
  float* k_mean = slot;
  float* scales = k_mean + n_mean;
  int32_t* sum128 = reinterpret_cast<int32_t*>(scales + n_scale);
  float* fcodes = kc.Df > 0 ? scales + n_scale + n_sum : nullptr;
  int8_t* codes = reinterpret_cast<int8_t*>(scales + n_scale + n_sum + n_float);
  prepare_keys(k, dims, smooth_k, k_mean, codes, scales, sum128, fcodes, kc.Dp, kc.Di, kc.n_blocks);
  kc.codes = codes, kc.scales = scales, kc.sum128 = sum128, kc.fcodes = fcodes;

  const Tiling qtiles(dims.Tq, params.layout.block_q);
  const int64_t per_head = qtiles.count;
  const int64_t n_items = static_cast<int64_t>(dims.B) * dims.Hq * per_head;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < n_items; ++item) {
    // Last tiles first: under a causal mask they are the most expensive, which balances the tail.
    const int t = static_cast<int>(per_head - 1 - item % per_head);
    const int64_t ib = item / per_head;
    sage_tile(q, v, k_mean, kc, dims, params, qtiles, isa, static_cast<int>(ib / dims.Hq),
              static_cast<int>(ib % dims.Hq), t, o, lse);
  }
}

}  // namespace sw::kernels::attention
