// Gated linear attention kernels: recurrent, single-step and chunkwise forward/backward.
// Semantics and layout: gated_linear_attention.h. Reference: ref/gated_linear_attention_ref.h.
//
// Chunk algorithm (fla.md 2.2/2.3/2.7, survey.md 3.5, SSD 6.3). In a chunk of L tokens with
// incoming state S, chunk-local gate sums B_i = sum_{l <= i} g_l, query-side BQ_i (= B_i for the
// standard read-out, = B_{i-1} with B_{-1} = 0 for RWKV-6) and q' = scale q:
//   inter  o_i  = (q'_i ⊙ e^{BQ_i}) S
//   intra  o_i += sum_j A_ij v_j,  A_ij = sum_k q'_ik k_jk e^{BQ_ik - B_jk}
//                 (j <= i; j < i for RWKV-6, whose diagonal is the bonus q'_i . (u ⊙ k_i))
//   state  S'   = diag(e^{B_{L-1}}) S + sum_j (k_j ⊙ e^{B_{L-1} - B_j}) v_j^T
// Every decay factor is <= 1 and comes from a direct sum of the gates it spans (prefix, suffix or
// block sums) or from a product of per-token decays, never from a difference of two cumulative
// sums, so strong decays neither overflow nor lose precision to cancellation. Per-channel gates
// cannot factor e^{BQ_i - B_j} over a whole chunk, so the chunk is cut into kSub-row blocks: an
// off-diagonal block pair (I > J) factors as
//   (q'_i e^{BQ_i - B_{I0-1}}) (e^{B_{I0-1} - B_Jend}) (k_j e^{B_Jend - B_j}), three factors <= 1,
// and becomes tile products; diagonal blocks are summed pair by pair with running products of the
// per-token decays.
// Backward per chunk uses the same factorisation; gate gradients come from the identity
// dL/dB_i = q'_i ⊙ dq'_i - k_i ⊙ dk_i (+ rowsum(S' ⊙ dS') at the last row), reverse-summed inside
// the chunk (fla.md 2.11), so a chunk needs only S and dS' from outside.
#include "kernels/linear/gated_linear_attention.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/linear/gla_tiles.h"

namespace sw::kernels {
namespace {

using gla_detail::exp_nonpos;
using gla_detail::tile_gemm;
using gla_detail::tile_transpose;
using gla_detail::TileTri;

// Row block of the per-channel intra-chunk factorisation: diagonal blocks are summed pair by pair
// (~kSub/2 pairs per token), off-diagonal ones become tile products with one pair factor each.
constexpr int kSub = 8;
constexpr int kStripe = 16;  // row stripe of the lower-triangular score products

// Slots of sw::scratch used here (documented in the header).
constexpr int kSlotTiles = 0;
constexpr int kSlotStates = 1;
constexpr int kSlotReduce = 2;

inline size_t pad16(size_t n) { return (n + 15) & ~size_t{15}; }

// Token-major strides of one (b, h) sequence inside [B, T, H, D] tensors.
struct SeqView {
  int64_t T, H, K, V;
  int64_t b, h;
  size_t qk(int64_t t) const { return static_cast<size_t>(((b * T + t) * H + h) * K); }
  size_t vo(int64_t t) const { return static_cast<size_t>(((b * T + t) * H + h) * V); }
  size_t tok(int64_t t) const { return static_cast<size_t>((b * T + t) * H + h); }
  size_t state() const { return static_cast<size_t>((b * H + h) * K * V); }
};

// Log-decay of every key channel of one token (g already offset to the token for data gates).
inline void fill_log_decay(GlaGate gate, const float* g, int64_t h, size_t tok, int64_t K,
                           float* out) {
  switch (gate) {
    case GlaGate::kNone:
      for (int64_t i = 0; i < K; ++i) out[i] = 0.0f;
      break;
    case GlaGate::kHeadConst:
      for (int64_t i = 0; i < K; ++i) out[i] = g[h];
      break;
    case GlaGate::kScalar:
      for (int64_t i = 0; i < K; ++i) out[i] = g[tok];
      break;
    case GlaGate::kChannel:
      for (int64_t i = 0; i < K; ++i) out[i] = g[tok * K + i];
      break;
  }
}

inline void exp_inplace(float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = exp_nonpos(x[i]);
}

// The token-by-token kernels sweep the K rows of the state once per token. Columns are taken in
// blocks of up to 64 so that the per-column accumulators (o, dv) and the token's v / do stay in
// registers across the sweep; only the state row itself is loaded and stored.
// Calls f(j0, n) for column blocks [j0, j0 + n) of a V-wide row, n = 64 or 16 as long as possible.
template <class F>
inline void for_column_blocks(int64_t V, F&& f) {
  int64_t j0 = 0;
  for (; j0 + 64 <= V; j0 += 64) f(j0, std::integral_constant<int, 64>{});
  for (; j0 + 16 <= V; j0 += 16) f(j0, std::integral_constant<int, 16>{});
  if (j0 < V) f(j0, V - j0);
}

// Forward of one token on columns [0, n) of S (row stride ldS): S = diag(a) S + k v^T and
// o = S^T q' (after the update) or S_prev^T q' (kReadBefore, RWKV-6). n <= 64.
template <bool kReadBefore, class N>
inline void token_forward_cols(int64_t K, int64_t ldS, float scale, const float* __restrict q,
                               const float* __restrict k, const float* __restrict v,
                               const float* __restrict a, float* __restrict S,
                               float* __restrict o, N n) {
  float acc[64], vv[64];
#pragma omp simd
  for (int j = 0; j < n; ++j) {
    acc[j] = 0.0f;
    vv[j] = v[j];
  }
  for (int64_t i = 0; i < K; ++i) {
    const float qi = scale * q[i], ai = a[i], ki = k[i];
    float* __restrict row = S + i * ldS;
#pragma omp simd
    for (int j = 0; j < n; ++j) {
      if (kReadBefore) {
        const float s = row[j];
        acc[j] += qi * s;
        row[j] = ai * s + ki * vv[j];
      } else {
        const float s = ai * row[j] + ki * vv[j];
        row[j] = s;
        acc[j] += qi * s;
      }
    }
  }
#pragma omp simd
  for (int j = 0; j < n; ++j) o[j] = acc[j];
}

// One token of the recurrence for one head: S [K, V] updated in place, o [V] written.
// a [K] = per-channel decay factors; u [K] (RWKV-6 bonus) or nullptr.
void token_forward(int64_t K, int64_t V, float scale, const float* __restrict q,
                   const float* __restrict k, const float* __restrict v, const float* __restrict a,
                   const float* __restrict u, float* __restrict S, float* __restrict o) {
  if (u) {
    for_column_blocks(V, [&](int64_t j0, auto n) {
      token_forward_cols<true>(K, V, scale, q, k, v + j0, a, S + j0, o + j0, n);
    });
    float bonus = 0.0f;
    for (int64_t i = 0; i < K; ++i) bonus += q[i] * u[i] * k[i];
    bonus *= scale;
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) o[j] += bonus * v[j];
  } else {
    for_column_blocks(V, [&](int64_t j0, auto n) {
      token_forward_cols<false>(K, V, scale, q, k, v + j0, a, S + j0, o + j0, n);
    });
  }
}

// Backward pass 1 on columns [0, n): advance S by one token and add this block's part of
// dq'_i = sum_j S[i, j] do[j] (S after the update, or before it for kReadBefore) into dq.
template <bool kReadBefore, class N>
inline void token_state_dq_cols(int64_t K, int64_t ldS, const float* __restrict k,
                                const float* __restrict v, const float* __restrict a,
                                const float* __restrict dout, float* __restrict S,
                                float* __restrict dq, N n) {
  float vv[64], dd[64];
#pragma omp simd
  for (int j = 0; j < n; ++j) {
    vv[j] = v[j];
    dd[j] = dout[j];
  }
  for (int64_t i = 0; i < K; ++i) {
    const float ai = a[i], ki = k[i];
    float* __restrict row = S + i * ldS;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int j = 0; j < n; ++j) {
      if (kReadBefore) {
        acc += row[j] * dd[j];
        row[j] = ai * row[j] + ki * vv[j];
      } else {
        const float s = ai * row[j] + ki * vv[j];
        row[j] = s;
        acc += s * dd[j];
      }
    }
    dq[i] += acc;
  }
}

// Backward pass 2 on columns [0, n): with dS the gradient w.r.t. S_t, add this block's part of
// dk_t = dS_t v_t into dk, write dv_t = dS_t^T k_t, and step dS back to S_{t-1}:
// dS_t includes q'_t do_t^T for the standard read-out; for RWKV-6 it goes to S_{t-1} instead.
template <bool kReadBefore, class N>
inline void token_dstate_cols(int64_t K, int64_t ldS, float scale, const float* __restrict q,
                              const float* __restrict k, const float* __restrict v,
                              const float* __restrict a, const float* __restrict dout,
                              float* __restrict dS, float* __restrict dk, float* __restrict dv,
                              N n) {
  float vv[64], dd[64], dvacc[64];
#pragma omp simd
  for (int j = 0; j < n; ++j) {
    vv[j] = v[j];
    dd[j] = dout[j];
    dvacc[j] = 0.0f;
  }
  for (int64_t i = 0; i < K; ++i) {
    const float qi = scale * q[i], ai = a[i], ki = k[i];
    float* __restrict row = dS + i * ldS;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int j = 0; j < n; ++j) {
      if (kReadBefore) {
        const float r = row[j];
        acc += r * vv[j];
        dvacc[j] += ki * r;
        row[j] = ai * r + qi * dd[j];
      } else {
        const float r = row[j] + qi * dd[j];
        acc += r * vv[j];
        dvacc[j] += ki * r;
        row[j] = ai * r;
      }
    }
    dk[i] += acc;
  }
#pragma omp simd
  for (int j = 0; j < n; ++j) dv[j] = dvacc[j];
}

// Sums per-(b, h) partials [B, H, n] over b into out [H, n] (du, and dg of the constant gate).
void reduce_over_batch(const float* partial, int64_t B, int64_t H, int64_t n, float* out) {
  for (int64_t i = 0; i < H * n; ++i) {
    float s = 0.0f;
    for (int64_t b = 0; b < B; ++b) s += partial[b * H * n + i];
    out[i] = s;
  }
}

}  // namespace

// =============================================================================================
// Recurrent form
// =============================================================================================

void gla_forward_recurrent(const GlaDims& d, GlaGate gate, float scale, const float* q,
                           const float* k, const float* v, const float* g, const float* u,
                           const float* h0, float* o, float* ht) {
  const int64_t B = d.batch, T = d.seq_len, H = d.heads, K = d.key_dim, V = d.value_dim;
  SW_DASSERT(gate == GlaGate::kNone || g != nullptr);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const SeqView sv{T, H, K, V, bh / H, bh % H};
    float* S = scratch_floats(kSlotTiles, pad16(K * V) + pad16(K));
    float* a = S + pad16(K * V);
    if (h0) std::memcpy(S, h0 + sv.state(), sizeof(float) * K * V);
    else std::fill(S, S + K * V, 0.0f);
    const float* uh = u ? u + sv.h * K : nullptr;
    for (int64_t t = 0; t < T; ++t) {
      fill_log_decay(gate, g, sv.h, sv.tok(t), K, a);
      exp_inplace(a, K);
      token_forward(K, V, scale, q + sv.qk(t), k + sv.qk(t), v + sv.vo(t), a, uh, S, o + sv.vo(t));
    }
    if (ht) std::memcpy(ht + sv.state(), S, sizeof(float) * K * V);
  }
}

void gla_step(int64_t batch, int64_t heads, int64_t key_dim, int64_t value_dim, GlaGate gate,
              float scale, const float* q, const float* k, const float* v, const float* g,
              const float* u, float* state, float* o) {
  const int64_t K = key_dim, V = value_dim;
  const int64_t n = batch * heads;
  // A single token is ~K*V FMAs per head: only worth threads when there is a lot of them.
#pragma omp parallel for schedule(static) if (n * K * V >= (1 << 16))
  for (int64_t bh = 0; bh < n; ++bh) {
    const int64_t h = bh % heads;
    float* a = scratch_floats(kSlotTiles, pad16(K));
    fill_log_decay(gate, g, h, static_cast<size_t>(bh), K, a);
    exp_inplace(a, K);
    token_forward(K, V, scale, q + bh * K, k + bh * K, v + bh * V, a, u ? u + h * K : nullptr,
                  state + bh * K * V, o + bh * V);
  }
}

void gla_backward_recurrent(const GlaDims& d, GlaGate gate, float scale, const float* q,
                            const float* k, const float* v, const float* g, const float* u,
                            const float* h0, const float* dout, const float* dht, float* dq,
                            float* dk, float* dv, float* dg, float* du, float* dh0) {
  const int64_t B = d.batch, T = d.seq_len, H = d.heads, K = d.key_dim, V = d.value_dim;
  const bool rwkv = u != nullptr;
  const bool gate_grad = gate != GlaGate::kNone && dg != nullptr;
  const bool per_channel = gate == GlaGate::kChannel;
  // Per-(b, h) partial sums reduced over b at the end: du [B, H, K], constant-gate dg [B, H].
  float* du_part = nullptr;
  float* dgc_part = nullptr;
  if (rwkv || (gate_grad && gate == GlaGate::kHeadConst)) {
    du_part = scratch_floats(kSlotReduce, pad16(B * H * K) + pad16(B * H));
    dgc_part = du_part + pad16(B * H * K);
  }

#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const SeqView sv{T, H, K, V, bh / H, bh % H};
    const int64_t h = sv.h;
    const float* uh = rwkv ? u + h * K : nullptr;
    // Per-token query terms q' ⊙ dq'_dec of the gate identity: kept in dg itself for data gates,
    // in scratch for the constant gate (whose dg is only [H]).
    const bool qterm_in_scratch = gate_grad && gate == GlaGate::kHeadConst;
    float* S = scratch_floats(kSlotTiles, pad16(K * V) + 6 * pad16(K) + pad16(V) +
                                              (qterm_in_scratch ? pad16(T) : 0));
    float* a = S + pad16(K * V);
    float* dqt = a + pad16(K);
    float* carry = dqt + pad16(K);
    float* qprev = carry + pad16(K);
    float* dkt = qprev + pad16(K);
    float* dua = dkt + pad16(K);
    float* dvt = dua + pad16(K);
    float* qterm_scalar = dvt + pad16(V);
    if (rwkv)
      for (int64_t i = 0; i < K; ++i) dua[i] = 0.0f;

    // Pass 1, forward: recompute states, dq'_t = S_t do_t (S_{t-1} for RWKV-6) + bonus part.
    if (h0) std::memcpy(S, h0 + sv.state(), sizeof(float) * K * V);
    else std::fill(S, S + K * V, 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      const float* qt = q + sv.qk(t);
      const float* kt = k + sv.qk(t);
      const float* vt = v + sv.vo(t);
      const float* dot = dout + sv.vo(t);
      fill_log_decay(gate, g, h, sv.tok(t), K, a);
      exp_inplace(a, K);
      // dqt = dq'_dec: gradient w.r.t. q' = scale q, decay part only.
      std::fill(dqt, dqt + K, 0.0f);
      for_column_blocks(V, [&](int64_t j0, auto n) {
        if (rwkv) token_state_dq_cols<true>(K, V, kt, vt + j0, a, dot + j0, S + j0, dqt, n);
        else token_state_dq_cols<false>(K, V, kt, vt + j0, a, dot + j0, S + j0, dqt, n);
      });
      if (gate_grad) {
        float qs = 0.0f;
        float* qterm = per_channel ? dg + sv.qk(t) : nullptr;
        for (int64_t i = 0; i < K; ++i) {
          const float term = scale * qt[i] * dqt[i];
          if (per_channel) qterm[i] = term;
          qs += term;
        }
        if (gate == GlaGate::kScalar) dg[sv.tok(t)] = qs;
        if (qterm_in_scratch) qterm_scalar[t] = qs;
      }
      float* dq_out = dq + sv.qk(t);
      if (rwkv) {
        float dov = 0.0f;
        for (int64_t j = 0; j < V; ++j) dov += dot[j] * vt[j];
        for (int64_t i = 0; i < K; ++i) dq_out[i] = scale * (dqt[i] + dov * uh[i] * kt[i]);
      } else {
        for (int64_t i = 0; i < K; ++i) dq_out[i] = scale * dqt[i];
      }
    }
    // S == S_T now: the final-state term of the gate identity is rowsum(S_T ⊙ dS_T).
    float* dS = S;  // S is no longer needed once the carry is formed
    for (int64_t i = 0; i < K; ++i) {
      float acc = 0.0f;
      if (dht) {
        const float* drow = dht + sv.state() + i * V;
        for (int64_t j = 0; j < V; ++j) acc += S[i * V + j] * drow[j];
      }
      carry[i] = acc;
    }
    if (dht) std::memcpy(dS, dht + sv.state(), sizeof(float) * K * V);
    else std::fill(dS, dS + K * V, 0.0f);
    float carry_scalar = 0.0f;
    for (int64_t i = 0; i < K; ++i) carry_scalar += carry[i];
    float dgc_sum = 0.0f;
    bool have_qprev = false;
    float qprev_scalar = 0.0f;

    // Pass 2, reverse: dS is the gradient w.r.t. S_t on entry of step t.
    for (int64_t t = T - 1; t >= 0; --t) {
      const float* qt = q + sv.qk(t);
      const float* kt = k + sv.qk(t);
      const float* vt = v + sv.vo(t);
      const float* dot = dout + sv.vo(t);
      fill_log_decay(gate, g, h, sv.tok(t), K, a);
      exp_inplace(a, K);
      // dkt, dvt: decay parts of dk_t, dv_t (the RWKV-6 bonus is added below).
      std::fill(dkt, dkt + K, 0.0f);
      for_column_blocks(V, [&](int64_t j0, auto n) {
        if (rwkv)
          token_dstate_cols<true>(K, V, scale, qt, kt, vt + j0, a, dot + j0, dS + j0, dkt,
                                  dvt + j0, n);
        else
          token_dstate_cols<false>(K, V, scale, qt, kt, vt + j0, a, dot + j0, dS + j0, dkt,
                                   dvt + j0, n);
      });
      if (gate_grad) {
        // carry accumulates dL/dB_m for m >= t; the RWKV-6 query term of token t+1 reads B_t.
        float* dgt = per_channel ? dg + sv.qk(t) : nullptr;
        float qs_t = 0.0f, ks = 0.0f;
        if (gate == GlaGate::kScalar) qs_t = dg[sv.tok(t)];
        if (qterm_in_scratch) qs_t = qterm_scalar[t];
        for (int64_t i = 0; i < K; ++i) {
          const float kterm = kt[i] * dkt[i];
          ks += kterm;
          if (per_channel) {
            const float qterm = dgt[i];
            if (rwkv) {
              carry[i] += (have_qprev ? qprev[i] : 0.0f) - kterm;
              qprev[i] = qterm;
            } else {
              carry[i] += qterm - kterm;
            }
            dgt[i] = carry[i];
          }
        }
        if (!per_channel) {
          if (rwkv) {
            carry_scalar += (have_qprev ? qprev_scalar : 0.0f) - ks;
            qprev_scalar = qs_t;
          } else {
            carry_scalar += qs_t - ks;
          }
          if (gate == GlaGate::kScalar) dg[sv.tok(t)] = carry_scalar;
          dgc_sum += carry_scalar;
        }
        have_qprev = true;
      }
      float* dk_out = dk + sv.qk(t);
      float* dv_out = dv + sv.vo(t);
      if (rwkv) {
        float dov = 0.0f, bonus = 0.0f;
        for (int64_t j = 0; j < V; ++j) dov += dot[j] * vt[j];
        for (int64_t i = 0; i < K; ++i) bonus += qt[i] * uh[i] * kt[i];
        bonus *= scale;
        for (int64_t i = 0; i < K; ++i) {
          dk_out[i] = dkt[i] + dov * uh[i] * scale * qt[i];
          dua[i] += dov * scale * qt[i] * kt[i];
        }
        for (int64_t j = 0; j < V; ++j) dv_out[j] = dvt[j] + bonus * dot[j];
      } else {
        std::memcpy(dk_out, dkt, sizeof(float) * K);
        std::memcpy(dv_out, dvt, sizeof(float) * V);
      }
    }
    if (dh0) std::memcpy(dh0 + sv.state(), dS, sizeof(float) * K * V);
    if (rwkv) std::memcpy(du_part + bh * K, dua, sizeof(float) * K);
    if (qterm_in_scratch) dgc_part[bh] = dgc_sum;
  }
  if (rwkv && du) reduce_over_batch(du_part, B, H, K, du);
  if (gate_grad && gate == GlaGate::kHeadConst) reduce_over_batch(dgc_part, B, H, 1, dg);
}

// =============================================================================================
// Chunk form
// =============================================================================================

namespace {

// Per-thread tiles of one chunk (C rows max), carved from one scratch slot. Shapes in rows x cols.
struct ChunkTiles {
  float *S, *dS;                    // [K, V] state entering the chunk / gradient leaving it
  float *Qc, *Kc, *Vc, *dOc, *dVc;  // [C, K] q' = scale q, k; [C, V] v, dout, dv (backward)
  float *Gc, *gs, *Ac;              // raw log gates [C, K] / [C], per-token decays e^g [C, K]
  float *eBQ, *Qt, *eK, *Kh;        // [C, K] decay tiles and decayed q', k (chunk_decays)
  float *eL, *R, *run;              // [K] e^{chunk total}, gate-gradient last-row term, scratch
  float *A, *dA;                    // [C, C] intra scores and their gradient
  float *KT, *VT, *ST, *dST;        // transposes: [K, C], [V, C], [V, K], [V, K]
  float *Gam, *prow;                // scalar gates: [C, C] decay matrix, [C] running products
  float *dQ, *dK;                   // [C, K] gradients w.r.t. q', k
  // Per-channel block factorisation (channel_block_factors, kSub-row blocks, nb blocks).
  float *Kb, *eKb, *Eq, *Qb;        // [C, K]
  float *Tb, *Dv;                   // [nb, K] block totals, [nb, nb, K] pair factors
  float *Kt, *KtT, *QtJ;            // [C, K], [K, C], [C, K] pair-scaled key / query sides
  float *dQacc, *dKacc;             // [C, K]
  float *X, *dsum, *bsum;           // [kSub, K] running products, [K] sums
  float *seBQ, *seK, *bon;          // [C] scalar decays, RWKV-6 bonus gradients
  float *dua, *cvec;                // [K] du partial sum, gate-gradient accumulator
};

size_t carve_tiles(ChunkTiles* t, float* base, int64_t C, int64_t K, int64_t V) {
  size_t off = 0;
  ChunkTiles dummy;
  ChunkTiles& x = t ? *t : dummy;
  auto take = [&](float*& p, int64_t n) {
    p = t ? base + off : nullptr;
    off += pad16(static_cast<size_t>(n));
  };
  const int64_t nb = (C + kSub - 1) / kSub;
  take(x.S, K * V); take(x.dS, K * V);
  take(x.Qc, C * K); take(x.Kc, C * K); take(x.Vc, C * V); take(x.dOc, C * V); take(x.dVc, C * V);
  take(x.Gc, C * K); take(x.gs, C); take(x.Ac, C * K);
  take(x.eBQ, C * K); take(x.Qt, C * K); take(x.eK, C * K); take(x.Kh, C * K);
  take(x.eL, K); take(x.R, K); take(x.run, K);
  take(x.A, C * C); take(x.dA, C * C);
  take(x.KT, K * C); take(x.VT, V * C); take(x.ST, V * K); take(x.dST, V * K);
  take(x.Gam, C * C); take(x.prow, C);
  take(x.dQ, C * K); take(x.dK, C * K);
  take(x.Kb, C * K); take(x.eKb, C * K); take(x.Eq, C * K); take(x.Qb, C * K);
  take(x.Tb, nb * K); take(x.Dv, nb * nb * K);
  take(x.Kt, C * K); take(x.KtT, K * C); take(x.QtJ, C * K);
  take(x.dQacc, C * K); take(x.dKacc, C * K);
  take(x.X, kSub * K); take(x.dsum, K); take(x.bsum, K);
  take(x.seBQ, C); take(x.seK, C); take(x.bon, C);
  take(x.dua, K); take(x.cvec, K);
  return off;
}

ChunkTiles chunk_tiles(int64_t C, int64_t K, int64_t V) {
  ChunkTiles t;
  const size_t n = carve_tiles(nullptr, nullptr, C, K, V);
  carve_tiles(&t, scratch_floats(kSlotTiles, n), C, K, V);
  return t;
}

// Shared description of one call.
struct ChunkProblem {
  int64_t T, H, K, V, C, NT;
  GlaGate gate;
  float scale;
  const float *q, *k, *v, *g, *u;
  bool rwkv() const { return u != nullptr; }
  bool per_channel() const { return gate == GlaGate::kChannel; }
};

// Loads chunk [t0, t0 + L) of one sequence into contiguous tiles: q' = scale q, k, the raw log
// gates (Gc for per-channel, gs otherwise; zeros for kNone), and for the backward (dout given) v
// and dout. The forward reads v and writes o in place (row stride H * V).
void load_chunk(const ChunkProblem& p, const SeqView& sv, int64_t t0, int64_t L, const float* dout,
                ChunkTiles& w) {
  const int64_t K = p.K, V = p.V;
  for (int64_t i = 0; i < L; ++i) {
    const float* qs = p.q + sv.qk(t0 + i);
    float* qd = w.Qc + i * K;
#pragma omp simd
    for (int64_t c = 0; c < K; ++c) qd[c] = p.scale * qs[c];
    std::memcpy(w.Kc + i * K, p.k + sv.qk(t0 + i), sizeof(float) * K);
    if (dout) {
      std::memcpy(w.Vc + i * V, p.v + sv.vo(t0 + i), sizeof(float) * V);
      std::memcpy(w.dOc + i * V, dout + sv.vo(t0 + i), sizeof(float) * V);
    }
    switch (p.gate) {
      case GlaGate::kNone: w.gs[i] = 0.0f; break;
      case GlaGate::kHeadConst: w.gs[i] = p.g[sv.h]; break;
      case GlaGate::kScalar: w.gs[i] = p.g[sv.tok(t0 + i)]; break;
      case GlaGate::kChannel:
        std::memcpy(w.Gc + i * K, p.g + sv.tok(t0 + i) * K, sizeof(float) * K);
        break;
    }
  }
}

// Per-channel block factors (kSub-row blocks), from the per-token decays Ac = e^{Gc}. Inside
// block J: Kb_j = k_j ⊙ eKb_j with eKb_j = prod_{j < l <= Jend} a_l, the block total
// Tb_J = sum_{l in J} g_l, and (unless state_only) Qb_i = q'_i ⊙ Eq_i with
// Eq_i = prod_{J0 <= l <= i} a_l (l < i for RWKV-6); for every pair J < I,
// Dv_IJ = e^{sum of the gates of the blocks strictly between J and I}, so that
// A_ij = sum_k Qb_ik Dv_IJk Kb_jk for i in I, j in J (three factors <= 1); KT = Kb transposed.
// Products of at most kSub factors keep every factor within ~kSub ulp.
void channel_block_factors(const ChunkProblem& p, int64_t L, ChunkTiles& w, bool state_only) {
  const int64_t K = p.K, C = p.C;
  const int64_t nb = (C + kSub - 1) / kSub;
  const bool rwkv = p.rwkv();
  float* run = w.run;
  float* tot = w.bsum;
  for (int64_t J0 = 0, blk = 0; J0 < L; J0 += kSub, ++blk) {
    const int64_t jend = std::min<int64_t>(J0 + kSub, L) - 1;
    std::fill(run, run + K, 1.0f);
    std::fill(tot, tot + K, 0.0f);
    for (int64_t j = jend; j >= J0; --j) {
      const float* gj = w.Gc + j * K;
      const float* aj = w.Ac + j * K;
      const float* kj = w.Kc + j * K;
      float *e = w.eKb + j * K, *kb = w.Kb + j * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        e[c] = run[c];
        kb[c] = kj[c] * run[c];
        run[c] *= aj[c];
        tot[c] += gj[c];
      }
    }
    std::memcpy(w.Tb + blk * K, tot, sizeof(float) * K);
    if (state_only) continue;
    std::fill(run, run + K, 1.0f);
    for (int64_t i = J0; i <= jend; ++i) {
      const float* ai = w.Ac + i * K;
      const float* qi = w.Qc + i * K;
      float *e = w.Eq + i * K, *qb = w.Qb + i * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        const float before = run[c];
        run[c] = before * ai[c];
        e[c] = rwkv ? before : run[c];
        qb[c] = qi[c] * e[c];
      }
    }
    // Pair factors, J descending so that the gap between the blocks is a running sum of totals.
    std::fill(w.dsum, w.dsum + K, 0.0f);
    for (int64_t J = blk - 1; J >= 0; --J) {
      float* dv = w.Dv + (blk * nb + J) * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) dv[c] = exp_nonpos(w.dsum[c]);
      const float* tb = w.Tb + J * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) w.dsum[c] += tb[c];
    }
  }
  if (!state_only) tile_transpose(L, K, w.Kb, K, w.KT, C);
}

// Decay factors of the chunk. Every factor is the exp of a direct sum of the gates it spans
// (prefix, suffix or block sums, never a difference of two cumulative sums) or a product of at
// most kSub per-token decays, so it stays accurate however large the chunk's total decay grows:
//   eBQ_i = e^{sum_{l <= i} g_l}  (l < i for RWKV-6)      inter-chunk read,  Qt = q' ⊙ eBQ
//   eK_j  = e^{sum_{l > j} g_l}                            state write,       Kh = k ⊙ eK
//   eL    = e^{sum_l g_l}                                  carried state.
// Per-channel gates also get the block factors of channel_block_factors, from which eBQ and eK
// follow by one more factor per block (e^{totals of the blocks before / after}). The stage says
// what is needed: advancing the state (Kh, eL), the forward (+ Qt and the block factors) or the
// backward (+ the eBQ and eK tiles themselves).
enum class DecayStage { kState, kForward, kBackward };

void chunk_decays(const ChunkProblem& p, int64_t L, ChunkTiles& w, DecayStage stage) {
  const bool state_only = stage == DecayStage::kState;
  const bool tiles = stage == DecayStage::kBackward;
  const int64_t K = p.K;
  const bool rwkv = p.rwkv();
  if (p.per_channel()) {
#pragma omp simd
    for (int64_t i = 0; i < L * K; ++i) w.Ac[i] = exp_nonpos(w.Gc[i]);
    channel_block_factors(p, L, w, state_only);
    const int64_t nblk = (L + kSub - 1) / kSub;
    float* run = w.run;
    float* e = w.dsum;
    if (!state_only) {
      std::fill(run, run + K, 0.0f);
      for (int64_t blk = 0; blk < nblk; ++blk) {
#pragma omp simd
        for (int64_t c = 0; c < K; ++c) e[c] = exp_nonpos(run[c]);
        for (int64_t i = blk * kSub; i < std::min<int64_t>(L, (blk + 1) * kSub); ++i) {
          const float *eq = w.Eq + i * K, *qb = w.Qb + i * K;
          float *ebq = w.eBQ + i * K, *qt = w.Qt + i * K;
#pragma omp simd
          for (int64_t c = 0; c < K; ++c) qt[c] = qb[c] * e[c];
          if (tiles) {
#pragma omp simd
            for (int64_t c = 0; c < K; ++c) ebq[c] = eq[c] * e[c];
          }
        }
        const float* tb = w.Tb + blk * K;
#pragma omp simd
        for (int64_t c = 0; c < K; ++c) run[c] += tb[c];
      }
    }
    std::fill(run, run + K, 0.0f);
    for (int64_t blk = nblk - 1; blk >= 0; --blk) {
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) e[c] = exp_nonpos(run[c]);
      for (int64_t j = blk * kSub; j < std::min<int64_t>(L, (blk + 1) * kSub); ++j) {
        const float *ekb = w.eKb + j * K, *kb = w.Kb + j * K;
        float *ek = w.eK + j * K, *kh = w.Kh + j * K;
#pragma omp simd
        for (int64_t c = 0; c < K; ++c) kh[c] = kb[c] * e[c];
        if (tiles) {
#pragma omp simd
          for (int64_t c = 0; c < K; ++c) ek[c] = ekb[c] * e[c];
        }
      }
      const float* tb = w.Tb + blk * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) run[c] += tb[c];
    }
#pragma omp simd
    for (int64_t c = 0; c < K; ++c) w.eL[c] = exp_nonpos(run[c]);
  } else {
    float run = 0.0f;
    for (int64_t i = 0; i < L; ++i) {
      const float before = run;
      run += w.gs[i];
      w.seBQ[i] = rwkv ? before : run;
    }
    const float total = run;
    run = 0.0f;
    for (int64_t j = L - 1; j >= 0; --j) {
      w.seK[j] = run;
      run += w.gs[j];
    }
#pragma omp simd
    for (int64_t i = 0; i < L; ++i) {
      w.seBQ[i] = exp_nonpos(w.seBQ[i]);
      w.seK[i] = exp_nonpos(w.seK[i]);
    }
    const float el = exp_nonpos(total);
    for (int64_t c = 0; c < K; ++c) w.eL[c] = el;
    for (int64_t i = 0; i < L; ++i) {
      const float eq = w.seBQ[i], ek = w.seK[i];
      const float* qc = w.Qc + i * K;
      const float* kc = w.Kc + i * K;
      float *ebq = w.eBQ + i * K, *qt = w.Qt + i * K, *ekk = w.eK + i * K, *kh = w.Kh + i * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        qt[c] = qc[c] * eq;
        kh[c] = kc[c] * ek;
      }
      if (tiles) {
#pragma omp simd
        for (int64_t c = 0; c < K; ++c) {
          ebq[c] = eq;
          ekk[c] = ek;
        }
      }
    }
  }
}

// A [L, L] (row stride C): A[i, j] = X_i . Y_j for the lower stripes a masked product reads
// (each kStripe-row stripe up to its last row). X [L, P], YT [P, L] with row stride C.
void lower_stripes_product(int64_t L, int64_t C, int64_t P, const float* X, const float* YT,
                           float* A) {
  for (int64_t m0 = 0; m0 < L; m0 += kStripe) {
    const int64_t mr = std::min<int64_t>(kStripe, L - m0);
    tile_gemm(mr, std::min(L, m0 + kStripe), P, X + m0 * P, P, 1, YT, C, A + m0 * C, C, false);
  }
}

// Scalar gates: Gam[i, j] = prod_{j < l <= i} e^{g_l} for j <= i (j < l < i and j < i for
// RWKV-6), zero elsewhere. Row i is row i-1 times e^{g_i}: one exp per row, and the product of at
// most C factors <= 1 is accurate to a few ulp (no cumulative-sum differences).
void scalar_decay_matrix(const ChunkProblem& p, int64_t L, ChunkTiles& w) {
  const int64_t C = p.C;
  const bool rwkv = p.rwkv();
  float* prow = w.prow;  // prow[j] = prod_{j < l <= i} e^{g_l} after row i's update
  for (int64_t i = 0; i < L; ++i) {
    float* gam = w.Gam + i * C;
    if (rwkv) {
#pragma omp simd
      for (int64_t j = 0; j < i; ++j) gam[j] = prow[j];
    }
    const float ai = exp_nonpos(w.gs[i]);
#pragma omp simd
    for (int64_t j = 0; j < i; ++j) prow[j] *= ai;
    prow[i] = 1.0f;
    if (!rwkv) {
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) gam[j] = prow[j];
    }
    for (int64_t j = rwkv ? i : i + 1; j < L; ++j) gam[j] = 0.0f;
  }
}

// RWKV-6 bonus of every row: q'_i . (u ⊙ k_i).
void bonus_diagonal(int64_t L, int64_t K, const float* uh, const ChunkTiles& w, float* out,
                    int64_t stride) {
  for (int64_t i = 0; i < L; ++i) {
    const float* qi = w.Qc + i * K;
    const float* ki = w.Kc + i * K;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < K; ++c) acc += qi[c] * uh[c] * ki[c];
    out[i * stride] = acc;
  }
}

// Scalar-gate intra-chunk scores A = (q' k^T) ⊙ Gam, bonus on the diagonal for RWKV-6.
// Needs Gam and KT = Kc transposed.
void intra_scores_scalar(const ChunkProblem& p, int64_t L, const float* uh, ChunkTiles& w) {
  const int64_t C = p.C, K = p.K;
  lower_stripes_product(L, C, K, w.Qc, w.KT, w.A);
  for (int64_t i = 0; i < L; ++i) {
    float* Ai = w.A + i * C;
    const float* gam = w.Gam + i * C;
    const int64_t jend = std::min(L, (i / kStripe + 1) * kStripe);  // columns the stripe computed
#pragma omp simd
    for (int64_t j = 0; j < jend; ++j) Ai[j] *= gam[j];
    for (int64_t j = jend; j < L; ++j) Ai[j] = 0.0f;
  }
  if (p.rwkv()) bonus_diagonal(L, K, uh, w, w.A, C + 1);
}

// Key side of query block I (I0 = its first row): KtT[:, j] = KT[:, j] ⊙ Dv_IJ for all j < I0
// (row stride C), and with rows set also Kt_j = Kb_j ⊙ Dv_IJ ([I0, K]).
void key_side_of_block(int64_t K, int64_t C, int64_t I0, ChunkTiles& w, bool rows) {
  const int64_t nb = (C + kSub - 1) / kSub;
  const int64_t blk = I0 / kSub;
  for (int64_t J0 = 0; J0 < I0; J0 += kSub) {
    const float* dv = w.Dv + (blk * nb + J0 / kSub) * K;
    for (int64_t c = 0; c < K; ++c) {
      const float* src = w.KT + c * C + J0;
      float* dst = w.KtT + c * C + J0;
      const float f = dv[c];
#pragma omp simd
      for (int64_t j = 0; j < kSub; ++j) dst[j] = src[j] * f;
    }
    if (rows)
      for (int64_t j = J0; j < J0 + kSub; ++j) {
        const float* kb = w.Kb + j * K;
        float* kt = w.Kt + j * K;
#pragma omp simd
        for (int64_t c = 0; c < K; ++c) kt[c] = kb[c] * dv[c];
      }
  }
}

// sum_c q_c k_c w_c: one diagonal-block score with its decay weights (w == nullptr: all 1).
// Out of line on purpose: inlined into the visitor lambdas below, GCC 12 leaves this reduction
// scalar.
__attribute__((noinline)) float decayed_dot(int64_t K, const float* __restrict q,
                                            const float* __restrict k, const float* __restrict w) {
  float acc = 0.0f;
  if (!w) {
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < K; ++c) acc += q[c] * k[c];
  } else {
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < K; ++c) acc += q[c] * k[c] * w[c];
  }
  return acc;
}

// Backward of decayed_dot with upstream gradient da: dq += da k ⊙ w, dk += da q ⊙ w; returns the
// score itself (recomputed for dv).
__attribute__((noinline)) float decayed_dot_backward(int64_t K, const float* __restrict q,
                                                     const float* __restrict k,
                                                     const float* __restrict w, float da,
                                                     float* __restrict dq, float* __restrict dk) {
  float acc = 0.0f;
  if (!w) {
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < K; ++c) {
      acc += q[c] * k[c];
      dq[c] += da * k[c];
      dk[c] += da * q[c];
    }
  } else {
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < K; ++c) {
      acc += q[c] * k[c] * w[c];
      dq[c] += da * k[c] * w[c];
      dk[c] += da * q[c] * w[c];
    }
  }
  return acc;
}

// Visits the pairs (i, j) of every diagonal block that the decay mask keeps (j <= i, or j < i for
// RWKV-6) with their per-channel decay weights wt = prod_{j < l <= i} a_l (j < l < i for
// RWKV-6): running products kept in w.X (row j - I0), multiplied by a_i = e^{g_i} (Ac) row by row,
// so no exp per pair and the weights are accurate to ~kSub ulp.
// visit(i, j, wt); wt == nullptr means all ones (the pair i == j).
template <class Visit>
void for_each_diagonal_pair(const ChunkProblem& p, int64_t L, ChunkTiles& w, Visit&& visit) {
  const int64_t K = p.K;
  const bool rwkv = p.rwkv();
  for (int64_t I0 = 0; I0 < L; I0 += kSub) {
    const int64_t iend = std::min<int64_t>(I0 + kSub, L);
    for (int64_t i = I0; i < iend; ++i) {
      if (rwkv)
        for (int64_t j = I0; j < i; ++j) visit(i, j, w.X + (j - I0) * K);
      const float* ai = w.Ac + i * K;
      for (int64_t j = I0; j < i; ++j) {
        float* x = w.X + (j - I0) * K;
#pragma omp simd
        for (int64_t c = 0; c < K; ++c) x[c] *= ai[c];
      }
      std::fill(w.X + (i - I0) * K, w.X + (i - I0 + 1) * K, 1.0f);
      if (!rwkv) {
        for (int64_t j = I0; j < i; ++j) visit(i, j, w.X + (j - I0) * K);
        visit(i, i, nullptr);
      }
    }
  }
}

// Per-channel intra-chunk scores (forward): off-diagonal blocks by tile products, diagonal blocks
// element by element; zero above the diagonal; bonus on the diagonal for RWKV-6.
void intra_scores_channel(const ChunkProblem& p, int64_t L, const float* uh, ChunkTiles& w) {
  const int64_t K = p.K, C = p.C;
  for (int64_t i = 0; i < L; ++i) std::fill(w.A + i * C, w.A + i * C + L, 0.0f);
  for (int64_t I0 = kSub; I0 < L; I0 += kSub) {
    const int64_t Ir = std::min<int64_t>(kSub, L - I0);
    key_side_of_block(K, C, I0, w, false);
    tile_gemm(Ir, I0, K, w.Qb + I0 * K, K, 1, w.KtT, C, w.A + I0 * C, C, false);
  }
  for_each_diagonal_pair(p, L, w, [&](int64_t i, int64_t j, const float* wt) {
    w.A[i * C + j] = decayed_dot(K, w.Qc + i * K, w.Kc + j * K, wt);
  });
  if (p.rwkv()) bonus_diagonal(L, K, uh, w, w.A, C + 1);
}

// S [K, V] = diag(eL) S + Kh^T v: the state after the chunk (v rows with stride ldv).
void advance_state(int64_t L, int64_t K, int64_t V, const ChunkTiles& w, const float* v,
                   int64_t ldv, float* S) {
  for (int64_t c = 0; c < K; ++c) {
    const float e = w.eL[c];
    float* row = S + c * V;
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) row[j] *= e;
  }
  tile_gemm(K, V, L, w.Kh, 1, K, v, ldv, S, V, true);
}

}  // namespace

void gla_forward_chunk(const GlaDims& d, GlaGate gate, float scale, int64_t chunk_size,
                       const float* q, const float* k, const float* v, const float* g,
                       const float* u, const float* h0, float* o, float* ht, float* chunk_states) {
  const int64_t B = d.batch, T = d.seq_len, H = d.heads, K = d.key_dim, V = d.value_dim;
  SW_DASSERT(chunk_size >= 1);
  SW_DASSERT(gate == GlaGate::kNone || g != nullptr);
  const int64_t C = chunk_size, NT = gla_num_chunks(T, C);
  const ChunkProblem p{T, H, K, V, C, NT, gate, scale, q, k, v, g, u};

#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const SeqView sv{T, H, K, V, bh / H, bh % H};
    ChunkTiles w = chunk_tiles(C, K, V);
    const float* uh = u ? u + sv.h * K : nullptr;
    if (h0) std::memcpy(w.S, h0 + sv.state(), sizeof(float) * K * V);
    else std::fill(w.S, w.S + K * V, 0.0f);
    for (int64_t n = 0; n < NT; ++n) {
      const int64_t t0 = n * C, L = std::min(C, T - t0);
      if (chunk_states)
        std::memcpy(chunk_states + (static_cast<size_t>(bh) * NT + n) * K * V, w.S,
                    sizeof(float) * K * V);
      load_chunk(p, sv, t0, L, nullptr, w);
      chunk_decays(p, L, w, DecayStage::kForward);
      // Inter-chunk read of the incoming state.
      const float* vc = v + sv.vo(t0);  // rows of v and o are H * V apart
      float* oc = o + sv.vo(t0);
      const int64_t ldv = H * V;
      tile_gemm(L, V, K, w.Qt, K, 1, w.S, V, oc, ldv, false);
      if (p.per_channel()) {
        intra_scores_channel(p, L, uh, w);
      } else {
        tile_transpose(L, K, w.Kc, K, w.KT, C);
        scalar_decay_matrix(p, L, w);
        intra_scores_scalar(p, L, uh, w);
      }
      tile_gemm(L, V, L, w.A, C, 1, vc, ldv, oc, ldv, true, TileTri::kLowerA);
      advance_state(L, K, V, w, vc, ldv, w.S);
    }
    if (ht) std::memcpy(ht + sv.state(), w.S, sizeof(float) * K * V);
  }
}

void gla_backward_chunk(const GlaDims& d, GlaGate gate, float scale, int64_t chunk_size,
                        const float* q, const float* k, const float* v, const float* g,
                        const float* u, const float* h0, const float* chunk_states,
                        const float* dout, const float* dht, float* dq, float* dk, float* dv,
                        float* dg, float* du, float* dh0) {
  const int64_t B = d.batch, T = d.seq_len, H = d.heads, K = d.key_dim, V = d.value_dim;
  SW_DASSERT(chunk_size >= 1);
  SW_DASSERT(gate == GlaGate::kNone || g != nullptr);
  const int64_t C = chunk_size, NT = gla_num_chunks(T, C);
  const ChunkProblem p{T, H, K, V, C, NT, gate, scale, q, k, v, g, u};
  const bool rwkv = p.rwkv();
  const bool gate_grad = gate != GlaGate::kNone && dg != nullptr;
  const bool per_channel = p.per_channel();
  float* du_part = nullptr;
  float* dgc_part = nullptr;
  if (rwkv || (gate_grad && gate == GlaGate::kHeadConst)) {
    du_part = scratch_floats(kSlotReduce, pad16(B * H * K) + pad16(B * H));
    dgc_part = du_part + pad16(B * H * K);
  }

#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const SeqView sv{T, H, K, V, bh / H, bh % H};
    ChunkTiles w = chunk_tiles(C, K, V);
    const float* uh = rwkv ? u + sv.h * K : nullptr;
    if (rwkv) std::fill(w.dua, w.dua + K, 0.0f);
    float dgc_sum = 0.0f;

    // States entering each chunk: given, or recomputed by a state-only forward pass.
    const float* states =
        chunk_states ? chunk_states + static_cast<size_t>(bh) * NT * K * V : nullptr;
    if (!states && NT > 0) {
      float* rec = scratch_floats(kSlotStates, static_cast<size_t>(NT) * K * V);
      if (h0) std::memcpy(rec, h0 + sv.state(), sizeof(float) * K * V);
      else std::fill(rec, rec + K * V, 0.0f);
      for (int64_t n = 0; n + 1 < NT; ++n) {
        const int64_t t0 = n * C, L = std::min(C, T - t0);
        load_chunk(p, sv, t0, L, nullptr, w);
        chunk_decays(p, L, w, DecayStage::kState);
        float* next = rec + (n + 1) * K * V;
        std::memcpy(next, rec + n * K * V, sizeof(float) * K * V);
        advance_state(L, K, V, w, v + sv.vo(t0), H * V, next);
      }
      states = rec;
    }

    // dS: gradient w.r.t. the state leaving the current chunk.
    if (dht) std::memcpy(w.dS, dht + sv.state(), sizeof(float) * K * V);
    else std::fill(w.dS, w.dS + K * V, 0.0f);

    for (int64_t n = NT - 1; n >= 0; --n) {
      const int64_t t0 = n * C, L = std::min(C, T - t0);
      const float* S = states + n * K * V;
      load_chunk(p, sv, t0, L, dout, w);
      chunk_decays(p, L, w, DecayStage::kBackward);

      // dA = dO V^T on the lower stripes (only j <= i is ever read).
      tile_transpose(L, V, w.Vc, V, w.VT, C);
      lower_stripes_product(L, C, V, w.dOc, w.VT, w.dA);
      if (rwkv)
        for (int64_t i = 0; i < L; ++i) w.bon[i] = w.dA[i * C + i];  // gradient of the bonus

      // Inter/state ("decay") parts: dq' = (dO S^T) ⊙ eBQ, dk = (V dS^T) ⊙ eK.
      tile_transpose(K, V, S, V, w.ST, K);
      tile_transpose(K, V, w.dS, V, w.dST, K);
      tile_gemm(L, K, V, w.dOc, V, 1, w.ST, K, w.dQ, K, false);
      tile_gemm(L, K, V, w.Vc, V, 1, w.dST, K, w.dK, K, false);
#pragma omp simd
      for (int64_t i = 0; i < L * K; ++i) {
        w.dQ[i] *= w.eBQ[i];
        w.dK[i] *= w.eK[i];
      }
      // Last-row term of the gate identity: rowsum(S' ⊙ dS) with S' = diag(eL) S + Kh^T V the
      // state leaving the chunk, = eL ⊙ rowsum(S ⊙ dS) + sum_j k_j ⊙ dk_state_j.
      if (gate_grad) {
        for (int64_t c = 0; c < K; ++c) {
          float acc = 0.0f;
          const float* srow = S + c * V;
          const float* drow = w.dS + c * V;
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < V; ++j) acc += srow[j] * drow[j];
          w.R[c] = w.eL[c] * acc;
        }
        for (int64_t i = 0; i < L; ++i) {
          const float* ki = w.Kc + i * K;
          const float* dki = w.dK + i * K;
#pragma omp simd
          for (int64_t c = 0; c < K; ++c) w.R[c] += ki[c] * dki[c];
        }
      }

      // Intra-chunk part: A (needed for dv) and dA pushed into dq', dk.
      if (per_channel) {
        const int64_t nb = (C + kSub - 1) / kSub;
        for (int64_t i = 0; i < L; ++i) std::fill(w.A + i * C, w.A + i * C + L, 0.0f);
        // Off-diagonal blocks by query block: A_I = Qb_I Kt^T, dq'_I += Eq_I ⊙ (dA_I Kt).
        for (int64_t I0 = kSub; I0 < L; I0 += kSub) {
          const int64_t Ir = std::min<int64_t>(kSub, L - I0);
          key_side_of_block(K, C, I0, w, true);
          tile_gemm(Ir, I0, K, w.Qb + I0 * K, K, 1, w.KtT, C, w.A + I0 * C, C, false);
          tile_gemm(Ir, K, I0, w.dA + I0 * C, C, 1, w.Kt, K, w.dQacc + I0 * K, K, false);
          for (int64_t i = I0; i < I0 + Ir; ++i) {
            float* dqi = w.dQ + i * K;
            const float *eq = w.Eq + i * K, *dqa = w.dQacc + i * K;
#pragma omp simd
            for (int64_t c = 0; c < K; ++c) dqi[c] += eq[c] * dqa[c];
          }
        }
        // ... and by key block: dk_J += eKb_J ⊙ (dA_{.J}^T Qt) with Qt_i = Qb_i ⊙ Dv_{I(i) J}.
        for (int64_t J0 = 0; J0 + kSub < L; J0 += kSub) {
          const int64_t rows = L - J0 - kSub;
          for (int64_t i = J0 + kSub; i < L; ++i) {
            const float* dv = w.Dv + ((i / kSub) * nb + J0 / kSub) * K;
            const float* qb = w.Qb + i * K;
            float* qt = w.QtJ + (i - J0 - kSub) * K;
#pragma omp simd
            for (int64_t c = 0; c < K; ++c) qt[c] = qb[c] * dv[c];
          }
          tile_gemm(kSub, K, rows, w.dA + (J0 + kSub) * C + J0, 1, C, w.QtJ, K, w.dKacc + J0 * K, K,
                    false);
          for (int64_t j = J0; j < J0 + kSub; ++j) {
            float* dkj = w.dK + j * K;
            const float *ekb = w.eKb + j * K, *dka = w.dKacc + j * K;
#pragma omp simd
            for (int64_t c = 0; c < K; ++c) dkj[c] += ekb[c] * dka[c];
          }
        }
        for_each_diagonal_pair(p, L, w, [&](int64_t i, int64_t j, const float* wt) {
          // i == j (standard read-out) updates dq_i and dk_i from the same row: distinct tiles.
          w.A[i * C + j] = decayed_dot_backward(K, w.Qc + i * K, w.Kc + j * K, wt, w.dA[i * C + j],
                                                w.dQ + i * K, w.dK + j * K);
        });
        if (rwkv) bonus_diagonal(L, K, uh, w, w.A, C + 1);
      } else {
        tile_transpose(L, K, w.Kc, K, w.KT, C);
        scalar_decay_matrix(p, L, w);
        intra_scores_scalar(p, L, uh, w);
        // dA ⊙ Gam: Gam is zero off the decay mask (and on the RWKV-6 diagonal, the bonus).
        for (int64_t i = 0; i < L; ++i) {
          float* dAi = w.dA + i * C;
          const float* gam = w.Gam + i * C;
          const int64_t jend = std::min(L, (i / kStripe + 1) * kStripe);
#pragma omp simd
          for (int64_t j = 0; j < jend; ++j) dAi[j] *= gam[j];
          for (int64_t j = jend; j < L; ++j) dAi[j] = 0.0f;
        }
        tile_gemm(L, K, L, w.dA, C, 1, w.Kc, K, w.dQ, K, true, TileTri::kLowerA);
        tile_gemm(L, K, L, w.dA, 1, C, w.Qc, K, w.dK, K, true, TileTri::kUpperA);
      }

      // dv = A^T dO + Kh dS.
      float* dVc = w.dVc;
      tile_gemm(L, V, L, w.A, 1, C, w.dOc, V, dVc, V, false, TileTri::kUpperA);
      tile_gemm(L, V, K, w.Kh, K, 1, w.dS, V, dVc, V, true);

      // Gate gradients: reverse sums over the chunk of q' ⊙ dq'_dec (the query reads the gates up
      // to i, or up to i-1 for RWKV-6) minus k ⊙ dk_dec, starting from R at the last row.
      if (gate_grad) {
        float* acc = w.cvec;
        std::memcpy(acc, w.R, sizeof(float) * K);
        if (per_channel) {
          for (int64_t i = L - 1; i >= 0; --i) {
            const float* qi = w.Qc + i * K;
            const float* ki = w.Kc + i * K;
            const float* dqi = w.dQ + i * K;
            const float* dki = w.dK + i * K;
            float* dgt = dg + sv.qk(t0 + i);
            if (rwkv) {
#pragma omp simd
              for (int64_t c = 0; c < K; ++c) {
                acc[c] -= ki[c] * dki[c];
                dgt[c] = acc[c];
                acc[c] += qi[c] * dqi[c];
              }
            } else {
#pragma omp simd
              for (int64_t c = 0; c < K; ++c) {
                acc[c] += qi[c] * dqi[c] - ki[c] * dki[c];
                dgt[c] = acc[c];
              }
            }
          }
        } else {
          float a = 0.0f;
          for (int64_t c = 0; c < K; ++c) a += acc[c];
          for (int64_t i = L - 1; i >= 0; --i) {
            const float* qi = w.Qc + i * K;
            const float* ki = w.Kc + i * K;
            const float* dqi = w.dQ + i * K;
            const float* dki = w.dK + i * K;
            float qs = 0.0f, ks = 0.0f;
#pragma omp simd reduction(+ : qs, ks)
            for (int64_t c = 0; c < K; ++c) {
              qs += qi[c] * dqi[c];
              ks += ki[c] * dki[c];
            }
            float dgi;
            if (rwkv) {
              a -= ks;
              dgi = a;
              a += qs;
            } else {
              a += qs - ks;
              dgi = a;
            }
            if (gate == GlaGate::kScalar) dg[sv.tok(t0 + i)] = dgi;
            dgc_sum += dgi;
          }
        }
      }

      // Bonus (RWKV-6) o_i += (q'_i . (u ⊙ k_i)) v_i: its gradients, after the gate terms.
      if (rwkv) {
        for (int64_t i = 0; i < L; ++i) {
          const float b = w.bon[i];
          const float* qi = w.Qc + i * K;
          const float* ki = w.Kc + i * K;
          float* dqi = w.dQ + i * K;
          float* dki = w.dK + i * K;
#pragma omp simd
          for (int64_t c = 0; c < K; ++c) {
            dqi[c] += b * uh[c] * ki[c];
            dki[c] += b * uh[c] * qi[c];
            w.dua[c] += b * qi[c] * ki[c];
          }
        }
      }

      // dS for the previous chunk: diag(eL) dS + Qt^T dO.
      for (int64_t c = 0; c < K; ++c) {
        const float e = w.eL[c];
        float* row = w.dS + c * V;
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) row[j] *= e;
      }
      tile_gemm(K, V, L, w.Qt, 1, K, w.dOc, V, w.dS, V, true);

      for (int64_t i = 0; i < L; ++i) {
        float* dqo = dq + sv.qk(t0 + i);
        const float* dqi = w.dQ + i * K;
#pragma omp simd
        for (int64_t c = 0; c < K; ++c) dqo[c] = scale * dqi[c];
        std::memcpy(dk + sv.qk(t0 + i), w.dK + i * K, sizeof(float) * K);
        std::memcpy(dv + sv.vo(t0 + i), dVc + i * V, sizeof(float) * V);
      }
    }
    if (dh0) std::memcpy(dh0 + sv.state(), w.dS, sizeof(float) * K * V);
    if (rwkv) std::memcpy(du_part + bh * K, w.dua, sizeof(float) * K);
    if (gate_grad && gate == GlaGate::kHeadConst) dgc_part[bh] = dgc_sum;
  }
  if (rwkv && du) reduce_over_batch(du_part, B, H, K, du);
  if (gate_grad && gate == GlaGate::kHeadConst) reduce_over_batch(dgc_part, B, H, 1, dg);
}

}  // namespace sw::kernels
