#include "kernels/attention/flash_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/attention/attention_tiles.h"

namespace sw::kernels::attention {
namespace {

using namespace detail;

// Row strides (in floats) and per-(b, head) base pointers of the [B, T, H, D] tensors.
struct Geometry {
  const AttentionDims& dm;
  size_t q_stride, k_stride, v_stride, o_stride;
  int group;

  explicit Geometry(const AttentionDims& d)
      : dm(d),
        q_stride(static_cast<size_t>(d.Hq) * d.Dk),
        k_stride(static_cast<size_t>(d.Hkv) * d.Dk),
        v_stride(static_cast<size_t>(d.Hkv) * d.Dv),
        o_stride(static_cast<size_t>(d.Hq) * d.Dv),
        group(d.Hq / d.Hkv) {}

  size_t q_row(int b, int i, int h) const { return (static_cast<size_t>(b) * dm.Tq + i) * q_stride + static_cast<size_t>(h) * dm.Dk; }
  size_t o_row(int b, int i, int h) const { return (static_cast<size_t>(b) * dm.Tq + i) * o_stride + static_cast<size_t>(h) * dm.Dv; }
  size_t k_row(int b, int j, int hk) const { return (static_cast<size_t>(b) * dm.Tk + j) * k_stride + static_cast<size_t>(hk) * dm.Dk; }
  size_t v_row(int b, int j, int hk) const { return (static_cast<size_t>(b) * dm.Tk + j) * v_stride + static_cast<size_t>(hk) * dm.Dv; }
  size_t lse_at(int b, int h, int i) const { return (static_cast<size_t>(b) * dm.Hq + h) * dm.Tq + i; }
};

// panel[d][r] = rows[r][d] * mul for r < n, zero-padded to kTile columns.
void pack_transposed(const float* rows, size_t stride, int n, int D, float mul, float* __restrict panel) {
  for (int r = 0; r < kTile; ++r) {
    if (r < n) {
      const float* row = rows + r * stride;
      for (int d = 0; d < D; ++d) panel[static_cast<size_t>(d) * kTile + r] = row[d] * mul;
    } else {
      for (int d = 0; d < D; ++d) panel[static_cast<size_t>(d) * kTile + r] = 0.f;
    }
  }
}

// rows[r][d] = panel[d][r] * mul[r] for r < n.
void unpack_transposed(const float* __restrict panel, int n, int D, const float* mul, float* rows, size_t stride) {
  for (int r = 0; r < n; ++r) {
    float* row = rows + r * stride;
    for (int d = 0; d < D; ++d) row[d] = panel[static_cast<size_t>(d) * kTile + r] * mul[r];
  }
}

float row_dot(const float* a, const float* b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Key-block list of query block qb (only meaningful when the layout is present).
struct LayoutRow {
  bool sparse = false;
  const int32_t* begin = nullptr;
  const int32_t* end = nullptr;
};

LayoutRow layout_for(const AttentionParams& p, const AttentionDims& dm, int b, int h, int qb) {
  LayoutRow row;
  if (p.layout.block_q > 0) {
    row.sparse = true;
    layout_row(p.layout, ceil_div(dm.Tq, p.layout.block_q), b, h, dm.Hq, qb, &row.begin, &row.end);
  }
  return row;
}

void forward_tile(const float* q, const float* k, const float* v, const Geometry& g, const AttentionParams& p,
                  const Tiling& qtiles, int b, int h, int t, float* o, float* lse) {
  const AttentionDims& dm = g.dm;
  int i0, i1, qb;
  qtiles.tile(t, &i0, &i1, &qb);
  if (i0 >= i1) return;
  const int n = i1 - i0, Dk = dm.Dk, Dv = dm.Dv;
  float* buf = scratch_floats(0, static_cast<size_t>(Dk + Dv + kTile) * kTile + 4 * kTile);
  float* qt = buf;                                  // [Dk][kTile] q^T * scale * log2(e)
  float* st = qt + static_cast<size_t>(Dk) * kTile;  // [kTile keys][kTile rows] scores, then p
  float* ot = st + kTile * kTile;                    // [Dv][kTile] unnormalised output^T
  float* m = ot + static_cast<size_t>(Dv) * kTile;   // running max (log2 units)
  float* l = m + kTile;                              // running sum
  float* alpha = l + kTile;
  float* inv = alpha + kTile;

  pack_transposed(q + g.q_row(b, i0, h), g.q_stride, n, Dk, effective_scale(p, Dk) * kLog2e, qt);
  TileRows rows;
  rows.init(p, p.q_offset + i0, n, dm.Tk);
  // A learned sink is the initial state of the online softmax: one logit with no value.
  const float m0 = p.sink_logits ? p.sink_logits[h] * kLog2e : kNegInf;
  const float l0 = p.sink_logits ? 1.f : 0.f;
  for (int r = 0; r < kTile; ++r) {
    m[r] = m0;
    l[r] = l0;
  }
  std::memset(ot, 0, sizeof(float) * Dv * kTile);

  const int hk = h / g.group;
  const float* kb = k + g.k_row(b, 0, hk);
  const float* vb = v + g.v_row(b, 0, hk);
  const LayoutRow lr = layout_for(p, dm, b, h, qb);
  for_each_key_chunk(rows, dm.Tk, p.layout.block_k, lr.sparse, lr.begin, lr.end, [&](int j0, int j1) {
    const TileRows::Cover cover = rows.classify(j0, j1);
    if (cover == TileRows::Cover::kNone) return;
    const int nk = j1 - j0;
    rows_dot_panel(kb + j0 * g.k_stride, g.k_stride, nk, qt, Dk, st);
    if (cover == TileRows::Cover::kPartial) rows.mask_keys_major(j0, nk, st);
    online_softmax_step(st, nk, m, l, alpha);
    rescale_panel(ot, Dv, alpha);
    panel_accumulate(vb + j0 * g.v_stride, g.v_stride, nk, st, Dv, ot);
  });

  for (int r = 0; r < n; ++r) inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
  unpack_transposed(ot, n, Dv, inv, o + g.o_row(b, i0, h), g.o_stride);
  if (lse) {
    float* lse_row = lse + g.lse_at(b, h, i0);
    for (int r = 0; r < n; ++r) lse_row[r] = l[r] > 0.f ? (m[r] + std::log2(l[r])) * kLn2 : kEmptyRowLse;
  }
}

// dq for one query tile: dq = scale * sum_j p_ij (dp_ij - delta_i) k_j over its visible keys.
void dq_tile(const float* q, const float* k, const float* v, const float* o, const float* lse, const float* dout,
             const float* dlse, const Geometry& g, const AttentionParams& p, const Tiling& qtiles, int b, int h,
             int t, float* dq) {
  const AttentionDims& dm = g.dm;
  int i0, i1, qb;
  qtiles.tile(t, &i0, &i1, &qb);
  if (i0 >= i1) return;
  const int n = i1 - i0, Dk = dm.Dk, Dv = dm.Dv;
  const float scale = effective_scale(p, Dk);
  float* buf = scratch_floats(0, static_cast<size_t>(2 * Dk + Dv + 2 * kTile) * kTile + 3 * kTile);
  float* qt = buf;                                    // [Dk][kTile] q^T * scale * log2(e)
  float* dot = qt + static_cast<size_t>(Dk) * kTile;  // [Dv][kTile] dout^T
  float* dqt = dot + static_cast<size_t>(Dv) * kTile; // [Dk][kTile] accumulated dq^T / scale
  float* st = dqt + static_cast<size_t>(Dk) * kTile;  // [kTile keys][kTile rows] p
  float* dpt = st + kTile * kTile;                    // [kTile keys][kTile rows] dp, then ds
  float* lse2 = dpt + kTile * kTile;
  float* delta = lse2 + kTile;
  float* mul = delta + kTile;

  pack_transposed(q + g.q_row(b, i0, h), g.q_stride, n, Dk, scale * kLog2e, qt);
  pack_transposed(dout + g.o_row(b, i0, h), g.o_stride, n, Dv, 1.f, dot);
  for (int r = 0; r < kTile; ++r) {
    lse2[r] = 0.f;
    delta[r] = 0.f;
    if (r < n) {
      lse2[r] = lse[g.lse_at(b, h, i0 + r)] * kLog2e;
      delta[r] = row_dot(dout + g.o_row(b, i0 + r, h), o + g.o_row(b, i0 + r, h), Dv) -
                 (dlse ? dlse[g.lse_at(b, h, i0 + r)] : 0.f);
    }
  }
  std::memset(dqt, 0, sizeof(float) * Dk * kTile);
  TileRows rows;
  rows.init(p, p.q_offset + i0, n, dm.Tk);

  const int hk = h / g.group;
  const float* kb = k + g.k_row(b, 0, hk);
  const float* vb = v + g.v_row(b, 0, hk);
  const LayoutRow lr = layout_for(p, dm, b, h, qb);
  for_each_key_chunk(rows, dm.Tk, p.layout.block_k, lr.sparse, lr.begin, lr.end, [&](int j0, int j1) {
    const TileRows::Cover cover = rows.classify(j0, j1);
    if (cover == TileRows::Cover::kNone) return;
    const int nk = j1 - j0;
    rows_dot_panel(kb + j0 * g.k_stride, g.k_stride, nk, qt, Dk, st);
    if (cover == TileRows::Cover::kPartial) rows.mask_keys_major(j0, nk, st);
    for (int jj = 0; jj < nk; ++jj) {
      float* s = st + jj * kTile;
#pragma omp simd
      for (int r = 0; r < kTile; ++r) s[r] = exp2_softmax(s[r] - lse2[r]);
    }
    rows_dot_panel(vb + j0 * g.v_stride, g.v_stride, nk, dot, Dv, dpt);
    for (int jj = 0; jj < nk; ++jj) {
      const float* s = st + jj * kTile;
      float* dp = dpt + jj * kTile;
#pragma omp simd
      for (int r = 0; r < kTile; ++r) dp[r] = s[r] * (dp[r] - delta[r]);
    }
    panel_accumulate(kb + j0 * g.k_stride, g.k_stride, nk, dpt, Dk, dqt);
  });
  for (int r = 0; r < kTile; ++r) mul[r] = scale;
  unpack_transposed(dqt, n, Dk, mul, dq + g.q_row(b, i0, h), g.q_stride);
}

// Query rows [*lo, *hi) that may see some key of [j0, j1) without a layout (a superset; the
// per-tile classification is exact).
void dense_query_range(const AttentionParams& p, int Tq, int j0, int j1, int* lo, int* hi) {
  int64_t a = 0, e = Tq;
  if (p.causal) a = std::max<int64_t>(a, j0 - p.q_offset);
  if (p.window > 0 && j0 >= p.n_sink) {
    e = std::min<int64_t>(e, static_cast<int64_t>(j1) - 1 + p.window - p.q_offset);
    if (!p.causal) a = std::max<int64_t>(a, static_cast<int64_t>(j0) - p.window + 1 - p.q_offset);
  }
  *lo = static_cast<int>(std::clamp<int64_t>(a, 0, Tq));
  *hi = static_cast<int>(std::clamp<int64_t>(e, *lo, Tq));
}

// dk, dv for one key tile of one kv head, summed over the query heads of its group.
void dkdv_tile(const float* q, const float* k, const float* v, const float* o, const float* lse, const float* dout,
               const float* dlse, const Geometry& g, const AttentionParams& p, const Tiling& qtiles,
               const Tiling& ktiles, int b, int hk, int t, float* dk, float* dv) {
  const AttentionDims& dm = g.dm;
  int j0, j1, kblk;
  ktiles.tile(t, &j0, &j1, &kblk);
  if (j0 >= j1) return;
  const int nk = j1 - j0, Dk = dm.Dk, Dv = dm.Dv;
  const float scale = effective_scale(p, Dk);
  const float qscale = scale * kLog2e;
  float* buf = scratch_floats(0, static_cast<size_t>(2 * Dk + 2 * Dv + 2 * kTile) * kTile + 2 * kTile);
  float* kt = buf;                                     // [Dk][kTile] k^T
  float* vt = kt + static_cast<size_t>(Dk) * kTile;    // [Dv][kTile] v^T
  float* dkt = vt + static_cast<size_t>(Dv) * kTile;   // [Dk][kTile] accumulated dk^T / scale
  float* dvt = dkt + static_cast<size_t>(Dk) * kTile;  // [Dv][kTile] accumulated dv^T
  float* s = dvt + static_cast<size_t>(Dv) * kTile;    // [kTile rows][kTile keys] p
  float* dp = s + kTile * kTile;                       // [kTile rows][kTile keys] dp, then ds
  float* lse2 = dp + kTile * kTile;
  float* delta = lse2 + kTile;

  pack_transposed(k + g.k_row(b, j0, hk), g.k_stride, nk, Dk, 1.f, kt);
  pack_transposed(v + g.v_row(b, j0, hk), g.v_stride, nk, Dv, 1.f, vt);
  std::memset(dkt, 0, sizeof(float) * Dk * kTile);
  std::memset(dvt, 0, sizeof(float) * Dv * kTile);
  TileRows rows;

  auto query_tile = [&](int h, int i0, int i1) {
    if (i0 >= i1) return;
    const int n = i1 - i0;
    rows.init(p, p.q_offset + i0, n, dm.Tk);
    const TileRows::Cover cover = rows.classify(j0, j1);
    if (cover == TileRows::Cover::kNone) return;
    const float* q0 = q + g.q_row(b, i0, h);
    const float* do0 = dout + g.o_row(b, i0, h);
    for (int r = 0; r < n; ++r) {
      lse2[r] = lse[g.lse_at(b, h, i0 + r)] * kLog2e;
      delta[r] = row_dot(do0 + r * g.o_stride, o + g.o_row(b, i0 + r, h), Dv) -
                 (dlse ? dlse[g.lse_at(b, h, i0 + r)] : 0.f);
    }
    rows_dot_panel(q0, g.q_stride, n, kt, Dk, s);
    for (int r = 0; r < n; ++r) {
      float* row = s + r * kTile;
#pragma omp simd
      for (int jj = 0; jj < kTile; ++jj) row[jj] *= qscale;
    }
    if (cover == TileRows::Cover::kPartial || nk < kTile) rows.mask_rows_major(j0, nk, s);
    for (int r = 0; r < n; ++r) {
      float* row = s + r * kTile;
      const float shift = lse2[r];
#pragma omp simd
      for (int jj = 0; jj < kTile; ++jj) row[jj] = exp2_softmax(row[jj] - shift);
    }
    rows_dot_panel(do0, g.o_stride, n, vt, Dv, dp);
    for (int r = 0; r < n; ++r) {
      const float* pr = s + r * kTile;
      float* dr = dp + r * kTile;
      const float dl = delta[r];
#pragma omp simd
      for (int jj = 0; jj < kTile; ++jj) dr[jj] = pr[jj] * (dr[jj] - dl);
    }
    panel_accumulate(do0, g.o_stride, n, s, Dv, dvt);
    panel_accumulate(q0, g.q_stride, n, dp, Dk, dkt);
  };

  for (int h = hk * g.group; h < (hk + 1) * g.group; ++h) {
    if (p.layout.block_q > 0) {
      const int n_qblocks = ceil_div(dm.Tq, p.layout.block_q);
      for (int qb = 0; qb < n_qblocks; ++qb) {
        const LayoutRow lr = layout_for(p, dm, b, h, qb);
        if (!std::binary_search(lr.begin, lr.end, kblk)) continue;
        for (int u = 0; u < qtiles.per_span; ++u) {
          int i0, i1, unused;
          qtiles.tile(qb * qtiles.per_span + u, &i0, &i1, &unused);
          query_tile(h, i0, i1);
        }
      }
    } else {
      int lo, hi;
      dense_query_range(p, dm.Tq, j0, j1, &lo, &hi);
      for (int i0 = lo / kTile * kTile; i0 < hi; i0 += kTile) query_tile(h, i0, std::min(i0 + kTile, dm.Tq));
    }
  }

  for (int jj = 0; jj < nk; ++jj) {
    float* dk_row = dk + g.k_row(b, j0 + jj, hk);
    float* dv_row = dv + g.v_row(b, j0 + jj, hk);
    for (int d = 0; d < Dk; ++d) dk_row[d] = dkt[static_cast<size_t>(d) * kTile + jj] * scale;
    for (int d = 0; d < Dv; ++d) dv_row[d] = dvt[static_cast<size_t>(d) * kTile + jj];
  }
}

}  // namespace

void flash_attention_forward(const float* q, const float* k, const float* v, const AttentionDims& dims,
                             const AttentionParams& params, float* o, float* lse) {
  SW_DASSERT(dims.Hkv > 0 && dims.Hq % dims.Hkv == 0);
  const Geometry g(dims);
  const Tiling qtiles(dims.Tq, params.layout.block_q);
  const int64_t per_head = qtiles.count;
  const int64_t n_items = static_cast<int64_t>(dims.B) * dims.Hq * per_head;
  if (dims.Tq == 0) return;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < n_items; ++item) {
    // Last tiles first: under a causal mask they are the most expensive, which balances the tail.
    const int t = static_cast<int>(per_head - 1 - item % per_head);
    const int64_t bh = item / per_head;
    forward_tile(q, k, v, g, params, qtiles, static_cast<int>(bh / dims.Hq), static_cast<int>(bh % dims.Hq), t, o,
                 lse);
  }
}

void flash_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                              const float* dout, const float* dlse, const AttentionDims& dims,
                              const AttentionParams& params, float* dq, float* dk, float* dv, float* dsink) {
  SW_DASSERT(dims.Hkv > 0 && dims.Hq % dims.Hkv == 0);
  const Geometry g(dims);
  const Tiling qtiles(dims.Tq, params.layout.block_q);
  const Tiling ktiles(dims.Tk, params.layout.block_k);

  if (dims.Tk > 0) {
    const int64_t per_head = ktiles.count;
    const int64_t n_items = static_cast<int64_t>(dims.B) * dims.Hkv * per_head;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const int t = static_cast<int>(item % per_head);  // first key tiles see the most queries
      const int64_t bh = item / per_head;
      dkdv_tile(q, k, v, o, lse, dout, dlse, g, params, qtiles, ktiles, static_cast<int>(bh / dims.Hkv),
                static_cast<int>(bh % dims.Hkv), t, dk, dv);
    }
  }
  if (dims.Tq > 0) {
    const int64_t per_head = qtiles.count;
    const int64_t n_items = static_cast<int64_t>(dims.B) * dims.Hq * per_head;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const int t = static_cast<int>(per_head - 1 - item % per_head);
      const int64_t bh = item / per_head;
      dq_tile(q, k, v, o, lse, dout, dlse, g, params, qtiles, static_cast<int>(bh / dims.Hq),
              static_cast<int>(bh % dims.Hq), t, dq);
    }
  }
  if (params.sink_logits && dsink) {
    // d lse_i / d sink = p_sink,i, so dsink = -sum_i p_sink,i * delta_i (delta includes -dlse).
#pragma omp parallel for schedule(static)
    for (int h = 0; h < dims.Hq; ++h) {
      double acc = 0.0;
      for (int b = 0; b < dims.B; ++b) {
        for (int i = 0; i < dims.Tq; ++i) {
          const float delta = row_dot(dout + g.o_row(b, i, h), o + g.o_row(b, i, h), dims.Dv) -
                              (dlse ? dlse[g.lse_at(b, h, i)] : 0.f);
          acc -= std::exp(static_cast<double>(params.sink_logits[h]) - lse[g.lse_at(b, h, i)]) * delta;
        }
      }
      dsink[h] = static_cast<float>(acc);
    }
  }
}

}  // namespace sw::kernels::attention
