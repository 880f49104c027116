#include "kernels/attention/sage_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/attention/attention_tiles.h"

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

// x[i] := round_half_away(x[i] / step): the int8 codes of one block.
void quantize_in_place(float* __restrict x, int n, float step) {
  for (int i = 0; i < n; ++i) x[i] = round_half_away(x[i] / step);
}

// Codes of x[0..n) with one symmetric int8 scale: returns the scale (1 when all are zero).
float int8_scale(float max_abs) { return max_abs > 0.f ? max_abs / kInt8Max : 1.f; }

void sage_tile(const float* q, const float* k, const float* v, const float* k_mean, const AttentionDims& dm,
               const AttentionParams& p, const Tiling& qtiles, int b, int h, int t, float* o, float* lse) {
  int i0, i1, qb;
  qtiles.tile(t, &i0, &i1, &qb);
  if (i0 >= i1) return;
  const int n = i1 - i0, Dk = dm.Dk, Dv = dm.Dv;
  const int group = dm.Hq / dm.Hkv, hk = h / group;
  const size_t q_stride = static_cast<size_t>(dm.Hq) * Dk, k_stride = static_cast<size_t>(dm.Hkv) * Dk,
               v_stride = static_cast<size_t>(dm.Hkv) * Dv, o_stride = static_cast<size_t>(dm.Hq) * Dv;
  float* buf = scratch_floats(0, static_cast<size_t>(2 * Dk + Dv + kTile) * kTile + 5 * kTile);
  float* q8t = buf;                                   // [Dk][kTile] int8 codes of q^T (as floats)
  float* k8 = q8t + static_cast<size_t>(Dk) * kTile;  // [kTile][Dk] int8 codes of one key block
  float* st = k8 + static_cast<size_t>(kTile) * Dk;   // [kTile keys][kTile rows]
  float* ot = st + kTile * kTile;                     // [Dv][kTile]
  float* m = ot + static_cast<size_t>(Dv) * kTile;
  float* l = m + kTile;
  float* alpha = l + kTile;
  float* shift = alpha + kTile;  // q . mean(k) in log2 units, per row
  float* inv = shift + kTile;

  const float qscale = effective_scale(p, Dk) * kLog2e;
  const float* q0 = q + (static_cast<size_t>(b) * dm.Tq + i0) * q_stride + static_cast<size_t>(h) * Dk;
  const float* mean = k_mean + (static_cast<size_t>(b) * dm.Hkv + hk) * Dk;
  // Scaled q rows go through the k8 buffer (free until the first key block) to be quantised.
  float q_absmax = 0.f;
  for (int r = 0; r < n; ++r) {
    const float* qr = q0 + r * q_stride;
    float* x = k8 + static_cast<size_t>(r) * Dk;
    float dot = 0.f;
    for (int d = 0; d < Dk; ++d) {
      x[d] = qr[d] * qscale;
      q_absmax = std::max(q_absmax, std::fabs(x[d]));
      dot += x[d] * mean[d];
    }
    shift[r] = dot;
  }
  const float sq = int8_scale(q_absmax);
  quantize_in_place(k8, n * Dk, sq);
  for (int r = 0; r < kTile; ++r)
    for (int d = 0; d < Dk; ++d) q8t[static_cast<size_t>(d) * kTile + r] = r < n ? k8[static_cast<size_t>(r) * Dk + d] : 0.f;

  TileRows rows;
  rows.init(p, p.q_offset + i0, n, dm.Tk);
  for (int r = 0; r < kTile; ++r) {
    // The learned sink competes with unsmoothed logits: shift it like them.
    m[r] = p.sink_logits ? p.sink_logits[h] * kLog2e - (r < n ? shift[r] : 0.f) : kNegInf;
    l[r] = p.sink_logits ? 1.f : 0.f;
  }
  std::memset(ot, 0, sizeof(float) * Dv * kTile);

  const float* kb = k + static_cast<size_t>(b) * dm.Tk * k_stride + static_cast<size_t>(hk) * Dk;
  const float* vb = v + static_cast<size_t>(b) * dm.Tk * v_stride + static_cast<size_t>(hk) * Dv;
  int cur_block = -1;
  float sk = 1.f;
  bool sparse = p.layout.block_q > 0;
  const int32_t *blk_begin = nullptr, *blk_end = nullptr;
  if (sparse) layout_row(p.layout, ceil_div(dm.Tq, p.layout.block_q), b, h, dm.Hq, qb, &blk_begin, &blk_end);
  for_each_key_chunk(rows, dm.Tk, p.layout.block_k, sparse, blk_begin, blk_end, [&](int j0, int j1) {
    const TileRows::Cover cover = rows.classify(j0, j1);
    if (cover == TileRows::Cover::kNone) return;
    const int a = j0 / kTile * kTile;
    if (a != cur_block) {  // quantise the whole aligned key block, whatever part of it is visible
      cur_block = a;
      const int nb = std::min(kTile, dm.Tk - a);
      float k_absmax = 0.f;
      for (int jj = 0; jj < nb; ++jj) {
        const float* kr = kb + (a + jj) * k_stride;
        float* dst = k8 + static_cast<size_t>(jj) * Dk;
#pragma omp simd reduction(max : k_absmax)
        for (int d = 0; d < Dk; ++d) {
          dst[d] = kr[d] - mean[d];
          k_absmax = std::max(k_absmax, std::fabs(dst[d]));
        }
      }
      sk = int8_scale(k_absmax);
      quantize_in_place(k8, nb * Dk, sk);
    }
    const int nk = j1 - j0;
    rows_dot_panel(k8 + static_cast<size_t>(j0 - a) * Dk, Dk, nk, q8t, Dk, st);
    const float dequant = sq * sk;
    for (int jj = 0; jj < nk; ++jj) {
      float* s = st + jj * kTile;
#pragma omp simd
      for (int r = 0; r < kTile; ++r) s[r] *= dequant;
    }
    if (cover == TileRows::Cover::kPartial) rows.mask_keys_major(j0, nk, st);
    online_softmax_step(st, nk, m, l, alpha);
    rescale_panel(ot, Dv, alpha);
    panel_accumulate(vb + j0 * v_stride, v_stride, nk, st, Dv, ot);
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

void sage_attention_forward(const float* q, const float* k, const float* v, const AttentionDims& dims,
                            const AttentionParams& params, bool smooth_k, float* o, float* lse) {
  SW_DASSERT(dims.Hkv > 0 && dims.Hq % dims.Hkv == 0 && dims.Dk <= 1040);
  if (dims.Tq == 0) return;
  // Per-(b, kv head) key means: B * Hkv * Dk floats in the caller's scratch slot 1.
  float* k_mean = scratch_floats(1, static_cast<size_t>(dims.B) * dims.Hkv * dims.Dk);
  const size_t k_stride = static_cast<size_t>(dims.Hkv) * dims.Dk;
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < static_cast<int64_t>(dims.B) * dims.Hkv; ++bh) {
    const int b = static_cast<int>(bh / dims.Hkv), hk = static_cast<int>(bh % dims.Hkv);
    float* mean = k_mean + static_cast<size_t>(bh) * dims.Dk;
    for (int d = 0; d < dims.Dk; ++d) {
      double acc = 0.0;
      if (smooth_k)
        for (int j = 0; j < dims.Tk; ++j) acc += k[(static_cast<size_t>(b) * dims.Tk + j) * k_stride + hk * dims.Dk + d];
      mean[d] = dims.Tk > 0 ? static_cast<float>(acc / dims.Tk) : 0.f;
    }
  }
  const Tiling qtiles(dims.Tq, params.layout.block_q);
  const int64_t per_head = qtiles.count;
  const int64_t n_items = static_cast<int64_t>(dims.B) * dims.Hq * per_head;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < n_items; ++item) {
    const int t = static_cast<int>(per_head - 1 - item % per_head);
    const int64_t bh = item / per_head;
    sage_tile(q, k, v, k_mean, dims, params, qtiles, static_cast<int>(bh / dims.Hq), static_cast<int>(bh % dims.Hq), t,
              o, lse);
  }
}

}  // namespace sw::kernels::attention
