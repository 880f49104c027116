// Gated linear attention kernels: recurrent, single-step and chunkwise forward/backward.
// Semantics and layout: see gated_linear_attention.h; reference: kernels/ref/gated_linear_attention_ref.
//
// Chunk algorithm (fla.md 2.2/2.3/2.7, survey.md 3.5, SSD 6.3). In a chunk of L tokens with incoming
// state S, local inclusive cumulative gates B_i (restarted every chunk, fp32) and query-side gates
// BQ_i (= B_i for the standard read-out, = B_{i-1} with B_{-1} = 0 for RWKV-6), q' = scale q:
//   inter  o_i  = (q'_i ⊙ e^{BQ_i}) S
//   intra  o_i += sum_j A_ij v_j,  A_ij = sum_k q'_ik k_jk e^{BQ_ik - B_jk}  (j <= i; j < i for RWKV-6,
//                                   whose diagonal is the bonus q'_i . (u ⊙ k_i))
//   state  S'   = diag(e^{B_{L-1}}) S + sum_j (k_j ⊙ e^{B_{L-1} - B_j}) v_j^T
// Every exponent is <= 0. Per-channel gates cannot factor e^{BQ_i - B_j} over a whole chunk, so the
// chunk is cut into kSub-row blocks: off-diagonal blocks (I > J) factor through the reference row
// r = I0 - 1 (last row before block I) as (q'_i e^{BQ_i - B_r}) (e^{B_r - B_Jend}) (k_j e^{B_Jend - B_j}),
// three factors <= 1, and become tile products; diagonal blocks are summed element by element.
// Backward per chunk uses the same factorisation; gate gradients come from the identity
// dL/dB_i = q'_i ⊙ dq'_i - k_i ⊙ dk_i (+ rowsum(S' ⊙ dS') at the last row), reverse-summed inside
// the chunk (fla.md 2.11), so nothing outside the chunk is needed besides S and dS'.
#include "kernels/linear/gated_linear_attention.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/linear/gla_tiles.h"

namespace sw::kernels {
namespace {

using gla_detail::exp_nonpos;
using gla_detail::tile_gemm;
using gla_detail::tile_transpose;
using gla_detail::TileTri;

constexpr int kSub = 16;  // row block of the per-channel intra-chunk factorisation

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
inline void fill_log_decay(GlaGate gate, const float* g, int64_t h, size_t tok, int64_t K, float* out) {
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

// One token of the recurrence for one head: S [K, V] updated in place, o [V] written.
// a [K] = per-channel decay factors; u [K] (RWKV-6 bonus) or nullptr.
void token_forward(int64_t K, int64_t V, float scale, const float* __restrict q,
                   const float* __restrict k, const float* __restrict v, const float* __restrict a,
                   const float* __restrict u, float* __restrict S, float* __restrict o) {
  for (int64_t j = 0; j < V; ++j) o[j] = 0.0f;
  if (u) {
    float bonus = 0.0f;
    for (int64_t i = 0; i < K; ++i) bonus += q[i] * u[i] * k[i];
    bonus *= scale;
    for (int64_t i = 0; i < K; ++i) {
      const float qi = scale * q[i], ai = a[i], ki = k[i];
      float* __restrict row = S + i * V;
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) {
        const float s = row[j];
        o[j] += qi * s;
        row[j] = ai * s + ki * v[j];
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) o[j] += bonus * v[j];
  } else {
    for (int64_t i = 0; i < K; ++i) {
      const float qi = scale * q[i], ai = a[i], ki = k[i];
      float* __restrict row = S + i * V;
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) {
        const float s = ai * row[j] + ki * v[j];
        row[j] = s;
        o[j] += qi * s;
      }
    }
  }
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
      for (int64_t i = 0; i < K; ++i) {
        const float ai = a[i], ki = kt[i];
        float* __restrict row = S + i * V;
        float acc = 0.0f;
        if (rwkv) {
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < V; ++j) {
            acc += row[j] * dot[j];
            row[j] = ai * row[j] + ki * vt[j];
          }
        } else {
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < V; ++j) {
            row[j] = ai * row[j] + ki * vt[j];
            acc += row[j] * dot[j];
          }
        }
        dqt[i] = acc;  // dq'_dec (gradient w.r.t. q' = scale q, decay part only)
      }
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
      for (int64_t j = 0; j < V; ++j) dvt[j] = 0.0f;
      for (int64_t i = 0; i < K; ++i) {
        const float qi = scale * qt[i], ai = a[i], ki = kt[i];
        float* __restrict row = dS + i * V;
        float acc = 0.0f;
        if (rwkv) {
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < V; ++j) {
            acc += row[j] * vt[j];
            dvt[j] += ki * row[j];
            row[j] = ai * row[j] + qi * dot[j];
          }
        } else {
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < V; ++j) {
            const float r = row[j] + qi * dot[j];
            acc += r * vt[j];
            dvt[j] += ki * r;
            row[j] = ai * r;
          }
        }
        dkt[i] = acc;  // decay part of dk_t
      }
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

// Per-thread tiles of one chunk (C rows max), carved from one scratch slot.
struct ChunkTiles {
  float *S, *dS, *Qc, *Kc, *Vc, *dOc, *Oc;
  float* gbuf;  // (C + 1) x K cumulative gates, row 0 = zeros (RWKV-6 exclusive read)
  float *eBQ, *Qt, *eK, *Kh, *eL, *R;
  float *A, *dA, *KT, *VT, *ST, *dST;
  float *dQ, *dK, *Kb, *eKb, *Eq, *Qb, *Qd, *Kd, *dQacc, *dKacc;
  float *sbuf, *seBQ, *seK, *qrow, *krow, *bon, *dua, *cvec;

  static size_t carve(ChunkTiles* t, float* base, int64_t C, int64_t K, int64_t V) {
    size_t off = 0;
    auto take = [&](float*& p, size_t n) {
      if (t) p = base + off;
      off += pad16(n);
    };
    ChunkTiles dummy;
    ChunkTiles& x = t ? *t : dummy;
    take(x.S, K * V); take(x.dS, K * V); take(x.Qc, C * K); take(x.Kc, C * K); take(x.Vc, C * V);
    take(x.dOc, C * V); take(x.Oc, C * V); take(x.gbuf, (C + 1) * K);
    take(x.eBQ, C * K); take(x.Qt, C * K); take(x.eK, C * K); take(x.Kh, C * K); take(x.eL, K);
    take(x.R, K);
    take(x.A, C * C); take(x.dA, C * C); take(x.KT, K * C); take(x.VT, V * C); take(x.ST, V * K);
    take(x.dST, V * K);
    take(x.dQ, C * K); take(x.dK, C * K); take(x.Kb, C * K); take(x.eKb, C * K); take(x.Eq, C * K);
    take(x.Qb, C * K); take(x.Qd, kSub * K); take(x.Kd, kSub * K); take(x.dQacc, C * K);
    take(x.dKacc, C * K);
    take(x.sbuf, C + 1); take(x.seBQ, C); take(x.seK, C); take(x.qrow, C); take(x.krow, C);
    take(x.bon, C); take(x.dua, K); take(x.cvec, K);
    return off;
  }
};

ChunkTiles chunk_tiles(int64_t C, int64_t K, int64_t V) {
  ChunkTiles t;
  const size_t n = ChunkTiles::carve(nullptr, nullptr, C, K, V);
  ChunkTiles::carve(&t, scratch_floats(kSlotTiles, n), C, K, V);
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

// Loads chunk [t0, t0 + L) of one sequence: q' = scale q, k, v (and dout) into contiguous tiles,
// and the chunk-local cumulative gates. Per-channel: Bc = gbuf + K (rows 0..L-1), BQ = Bc or the
// one-row-shifted gbuf (RWKV-6). Scalar modes: same with sbuf. kNone gives zero gates.
struct ChunkGates {
  const float* Bc;   // [L, K] per channel
  const float* BQ;   // [L, K]
  const float* bs;   // [L] scalar
  const float* bqs;  // [L]
};

ChunkGates load_chunk(const ChunkProblem& p, const SeqView& sv, int64_t t0, int64_t L,
                      const float* dout, ChunkTiles& w) {
  const int64_t K = p.K, V = p.V;
  for (int64_t i = 0; i < L; ++i) {
    const float* qs = p.q + sv.qk(t0 + i);
    const float* ks = p.k + sv.qk(t0 + i);
    float* qd = w.Qc + i * K;
#pragma omp simd
    for (int64_t c = 0; c < K; ++c) qd[c] = p.scale * qs[c];
    std::memcpy(w.Kc + i * K, ks, sizeof(float) * K);
    std::memcpy(w.Vc + i * V, p.v + sv.vo(t0 + i), sizeof(float) * V);
    if (dout) std::memcpy(w.dOc + i * V, dout + sv.vo(t0 + i), sizeof(float) * V);
  }
  ChunkGates cg{};
  if (p.per_channel()) {
    float* buf = w.gbuf;
    for (int64_t c = 0; c < K; ++c) buf[c] = 0.0f;
    for (int64_t i = 0; i < L; ++i) {
      const float* gt = p.g + sv.tok(t0 + i) * K;
      float* prev = buf + i * K;
      float* cur = buf + (i + 1) * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) cur[c] = prev[c] + gt[c];
    }
    cg.Bc = buf + K;
    cg.BQ = p.rwkv() ? buf : buf + K;
  } else {
    float* buf = w.sbuf;
    buf[0] = 0.0f;
    for (int64_t i = 0; i < L; ++i) {
      float gi = 0.0f;
      if (p.gate == GlaGate::kHeadConst) gi = p.g[sv.h];
      else if (p.gate == GlaGate::kScalar) gi = p.g[sv.tok(t0 + i)];
      buf[i + 1] = buf[i] + gi;
    }
    cg.bs = buf + 1;
    cg.bqs = p.rwkv() ? buf : buf + 1;
  }
  return cg;
}

// Decay factors of the inter-chunk read (eBQ = e^{BQ}), of the state write (eK = e^{B_{L-1} - B_j})
// and of the carried state (eL = e^{B_{L-1}}); Qt = q' ⊙ eBQ, Kh = k ⊙ eK. Scalar modes fill
// the per-row scalars seBQ / seK and broadcast them into the same [L, K] tiles.
void chunk_decays(const ChunkProblem& p, const ChunkGates& cg, int64_t L, ChunkTiles& w) {
  const int64_t K = p.K;
  if (p.per_channel()) {
    const float* last = cg.Bc + (L - 1) * K;
    for (int64_t c = 0; c < K; ++c) w.eL[c] = exp_nonpos(last[c]);
    for (int64_t i = 0; i < L; ++i) {
      const float* bq = cg.BQ + i * K;
      const float* bk = cg.Bc + i * K;
      const float* qc = w.Qc + i * K;
      const float* kc = w.Kc + i * K;
      float *ebq = w.eBQ + i * K, *qt = w.Qt + i * K, *ek = w.eK + i * K, *kh = w.Kh + i * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        ebq[c] = exp_nonpos(bq[c]);
        qt[c] = qc[c] * ebq[c];
        ek[c] = exp_nonpos(last[c] - bk[c]);
        kh[c] = kc[c] * ek[c];
      }
    }
  } else {
    const float last = cg.bs[L - 1];
    const float el = exp_nonpos(last);
    for (int64_t c = 0; c < K; ++c) w.eL[c] = el;
#pragma omp simd
    for (int64_t i = 0; i < L; ++i) {
      w.seBQ[i] = exp_nonpos(cg.bqs[i]);
      w.seK[i] = exp_nonpos(last - cg.bs[i]);
    }
    for (int64_t i = 0; i < L; ++i) {
      const float eq = w.seBQ[i], ek = w.seK[i];
      const float* qc = w.Qc + i * K;
      const float* kc = w.Kc + i * K;
      float *ebq = w.eBQ + i * K, *qt = w.Qt + i * K, *ekk = w.eK + i * K, *kh = w.Kh + i * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        ebq[c] = eq;
        qt[c] = qc[c] * eq;
        ekk[c] = ek;
        kh[c] = kc[c] * ek;
      }
    }
  }
}

// A [L, L] (row stride C) = q'_i . k_j for j in the lower stripes that the masked product needs.
void lower_stripes_qk(int64_t L, int64_t C, int64_t P, const float* X, const float* YT, float* A) {
  // X [L, P] rows, YT [P, L] (row stride C): A[i, j] = X_i . Y_j for j < stripe end.
  for (int64_t m0 = 0; m0 < L; m0 += kSub) {
    const int64_t mr = std::min<int64_t>(kSub, L - m0);
    tile_gemm(static_cast<int>(mr), static_cast<int>(std::min(L, m0 + kSub)), static_cast<int>(P),
              X + m0 * P, P, 1, YT, C, A + m0 * C, C, false);
  }
}

// Scalar-gate intra-chunk scores: A_ij = (q'_i . k_j) e^{bq_i - b_j} for j <= i (j < i and the bonus
// on the diagonal for RWKV-6); zero above the diagonal. KT must hold Kc transposed.
void intra_scores_scalar(const ChunkProblem& p, const ChunkGates& cg, int64_t L, const float* uh,
                         ChunkTiles& w) {
  const int64_t C = p.C, K = p.K;
  lower_stripes_qk(L, C, K, w.Qc, w.KT, w.A);
  const bool rwkv = p.rwkv();
  for (int64_t i = 0; i < L; ++i) {
    float* Ai = w.A + i * C;
    const float bqi = cg.bqs[i];
    const int64_t jend = rwkv ? i : i + 1;
#pragma omp simd
    for (int64_t j = 0; j < jend; ++j) Ai[j] *= exp_nonpos(bqi - cg.bs[j]);
    for (int64_t j = jend; j < L; ++j) Ai[j] = 0.0f;
    if (rwkv) {
      float bonus = 0.0f;
      const float* qi = w.Qc + i * K;
      const float* ki = w.Kc + i * K;
#pragma omp simd reduction(+ : bonus)
      for (int64_t c = 0; c < K; ++c) bonus += qi[c] * uh[c] * ki[c];
      Ai[i] = bonus;
    }
  }
}

// Per-channel preparation for the block factorisation: Kb_j = k_j ⊙ e^{B_Jend - B_j} (eKb the
// factor, KT = Kb transposed), and for query blocks I >= 1: Qb_i = q'_i ⊙ e^{BQ_i - B_{I0-1}} (Eq).
void channel_block_factors(const ChunkProblem& p, const ChunkGates& cg, int64_t L, ChunkTiles& w) {
  const int64_t K = p.K, C = p.C;
  for (int64_t J0 = 0; J0 < L; J0 += kSub) {
    const int64_t jend = std::min<int64_t>(J0 + kSub, L) - 1;
    const float* bend = cg.Bc + jend * K;
    for (int64_t j = J0; j <= jend; ++j) {
      const float* bj = cg.Bc + j * K;
      const float* kj = w.Kc + j * K;
      float *e = w.eKb + j * K, *kb = w.Kb + j * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        e[c] = exp_nonpos(bend[c] - bj[c]);
        kb[c] = kj[c] * e[c];
      }
    }
    if (J0 == 0) continue;
    const float* bref = cg.Bc + (J0 - 1) * K;
    for (int64_t i = J0; i <= jend; ++i) {
      const float* bq = cg.BQ + i * K;
      const float* qi = w.Qc + i * K;
      float *e = w.Eq + i * K, *qb = w.Qb + i * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        e[c] = exp_nonpos(bq[c] - bref[c]);
        qb[c] = qi[c] * e[c];
      }
    }
  }
  tile_transpose(static_cast<int>(L), static_cast<int>(K), w.Kb, K, w.KT, C);
}

// For the block pair (I, J < I): Qd = Qb_I ⊙ dvec, Kd = Kb_J ⊙ dvec with dvec = e^{B_{I0-1} - B_Jend}.
void pair_factor(const ChunkGates& cg, int64_t K, int64_t I0, int64_t Ir, int64_t J0, int64_t Jr,
                 ChunkTiles& w, bool need_kd) {
  const float* bref = cg.Bc + (I0 - 1) * K;
  const float* bend = cg.Bc + (J0 + Jr - 1) * K;
  float* dvec = w.cvec;
#pragma omp simd
  for (int64_t c = 0; c < K; ++c) dvec[c] = exp_nonpos(bref[c] - bend[c]);
  for (int64_t i = 0; i < Ir; ++i) {
    const float* qb = w.Qb + (I0 + i) * K;
    float* qd = w.Qd + i * K;
#pragma omp simd
    for (int64_t c = 0; c < K; ++c) qd[c] = qb[c] * dvec[c];
  }
  if (!need_kd) return;
  for (int64_t j = 0; j < Jr; ++j) {
    const float* kb = w.Kb + (J0 + j) * K;
    float* kd = w.Kd + j * K;
#pragma omp simd
    for (int64_t c = 0; c < K; ++c) kd[c] = kb[c] * dvec[c];
  }
}

// Per-channel intra-chunk scores (forward): off-diagonal blocks by tile products, diagonal blocks
// element by element with the exact exponent. Zero above the diagonal.
void intra_scores_channel(const ChunkProblem& p, const ChunkGates& cg, int64_t L, const float* uh,
                          ChunkTiles& w) {
  const int64_t K = p.K, C = p.C;
  const bool rwkv = p.rwkv();
  channel_block_factors(p, cg, L, w);
  for (int64_t i = 0; i < L; ++i) std::fill(w.A + i * C, w.A + i * C + L, 0.0f);
  for (int64_t I0 = 0; I0 < L; I0 += kSub) {
    const int64_t Ir = std::min<int64_t>(kSub, L - I0);
    for (int64_t J0 = 0; J0 < I0; J0 += kSub) {
      pair_factor(cg, K, I0, Ir, J0, kSub, w, false);
      tile_gemm(static_cast<int>(Ir), kSub, static_cast<int>(K), w.Qd, K, 1, w.KT + J0, C,
                w.A + I0 * C + J0, C, false);
    }
    for (int64_t i = I0; i < I0 + Ir; ++i) {
      const float* qi = w.Qc + i * K;
      const float* bq = cg.BQ + i * K;
      float* Ai = w.A + i * C;
      const int64_t jend = rwkv ? i : i + 1;
      for (int64_t j = I0; j < jend; ++j) {
        const float* kj = w.Kc + j * K;
        const float* bj = cg.Bc + j * K;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t c = 0; c < K; ++c) acc += qi[c] * kj[c] * exp_nonpos(bq[c] - bj[c]);
        Ai[j] = acc;
      }
      if (rwkv) {
        const float* ki = w.Kc + i * K;
        float bonus = 0.0f;
#pragma omp simd reduction(+ : bonus)
        for (int64_t c = 0; c < K; ++c) bonus += qi[c] * uh[c] * ki[c];
        Ai[i] = bonus;
      }
    }
  }
}

// S [K, V] = diag(eL) S + Kh^T Vc: the state after the chunk.
void advance_state(int64_t L, int64_t K, int64_t V, const ChunkTiles& w, float* S) {
  for (int64_t c = 0; c < K; ++c) {
    const float e = w.eL[c];
    float* row = S + c * V;
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) row[j] *= e;
  }
  tile_gemm(static_cast<int>(K), static_cast<int>(V), static_cast<int>(L), w.Kh, 1, K, w.Vc, V, S,
            V, true);
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
      const ChunkGates cg = load_chunk(p, sv, t0, L, nullptr, w);
      chunk_decays(p, cg, L, w);
      // Inter-chunk read of the incoming state.
      tile_gemm(static_cast<int>(L), static_cast<int>(V), static_cast<int>(K), w.Qt, K, 1, w.S, V,
                w.Oc, V, false);
      if (p.per_channel()) {
        intra_scores_channel(p, cg, L, uh, w);
      } else {
        tile_transpose(static_cast<int>(L), static_cast<int>(K), w.Kc, K, w.KT, C);
        intra_scores_scalar(p, cg, L, uh, w);
      }
      tile_gemm(static_cast<int>(L), static_cast<int>(V), static_cast<int>(L), w.A, C, 1, w.Vc, V,
                w.Oc, V, true, TileTri::kLowerA);
      for (int64_t i = 0; i < L; ++i)
        std::memcpy(o + sv.vo(t0 + i), w.Oc + i * V, sizeof(float) * V);
      advance_state(L, K, V, w, w.S);
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
    const float* states = chunk_states ? chunk_states + static_cast<size_t>(bh) * NT * K * V : nullptr;
    if (!states && NT > 0) {
      float* rec = scratch_floats(kSlotStates, static_cast<size_t>(NT) * K * V);
      if (h0) std::memcpy(rec, h0 + sv.state(), sizeof(float) * K * V);
      else std::fill(rec, rec + K * V, 0.0f);
      for (int64_t n = 0; n + 1 < NT; ++n) {
        const int64_t t0 = n * C, L = std::min(C, T - t0);
        const ChunkGates cg = load_chunk(p, sv, t0, L, nullptr, w);
        chunk_decays(p, cg, L, w);
        float* next = rec + (n + 1) * K * V;
        std::memcpy(next, rec + n * K * V, sizeof(float) * K * V);
        advance_state(L, K, V, w, next);
      }
      states = rec;
    }

    if (dht) std::memcpy(w.dS, dht + sv.state(), sizeof(float) * K * V);
    else std::fill(w.dS, w.dS + K * V, 0.0f);

    for (int64_t n = NT - 1; n >= 0; --n) {
      const int64_t t0 = n * C, L = std::min(C, T - t0);
      const float* S = states + n * K * V;
      const ChunkGates cg = load_chunk(p, sv, t0, L, dout, w);
      chunk_decays(p, cg, L, w);

      // dA = dO V^T on the lower stripes (only j <= i is ever read).
      tile_transpose(static_cast<int>(L), static_cast<int>(V), w.Vc, V, w.VT, C);
      lower_stripes_qk(L, C, V, w.dOc, w.VT, w.dA);

      // Inter/state ("decay") parts: dQ = (dO S^T) ⊙ eBQ, dK = (V dS'^T) ⊙ eK.
      tile_transpose(static_cast<int>(K), static_cast<int>(V), S, V, w.ST, K);
      tile_transpose(static_cast<int>(K), static_cast<int>(V), w.dS, V, w.dST, K);
      tile_gemm(static_cast<int>(L), static_cast<int>(K), static_cast<int>(V), w.dOc, V, 1, w.ST, K,
                w.dQ, K, false);
      tile_gemm(static_cast<int>(L), static_cast<int>(K), static_cast<int>(V), w.Vc, V, 1, w.dST, K,
                w.dK, K, false);
      for (int64_t i = 0; i < L * K; ++i) {
        w.dQ[i] *= w.eBQ[i];
        w.dK[i] *= w.eK[i];
      }
      // Final-row term of the gate identity: rowsum(S' ⊙ dS') with S' = diag(eL) S + Kh^T V,
      // = eL ⊙ rowsum(S ⊙ dS') + sum_j k_j ⊙ dK_state_j.
      if (gate_grad) {
        for (int64_t c = 0; c < K; ++c) {
          float acc = 0.0f;
          const float* srow = S + c * V;
          const float* drow = w.dS + c * V;
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < V; ++j) acc += srow[j] * drow[j];
          w.R[c] = w.eL[c] * acc;
        }
        for (int64_t i = 0; i < L; ++i)
          for (int64_t c = 0; c < K; ++c) w.R[c] += w.Kc[i * K + c] * w.dK[i * K + c];
      }

      // Intra-chunk part: A (for dv) and its gradient into dQ, dK.
      if (per_channel) {
        channel_block_factors(p, cg, L, w);
        for (int64_t i = 0; i < L; ++i) {
          std::fill(w.A + i * C, w.A + i * C + L, 0.0f);
          std::fill(w.dQacc + i * K, w.dQacc + (i + 1) * K, 0.0f);
          std::fill(w.dKacc + i * K, w.dKacc + (i + 1) * K, 0.0f);
        }
        for (int64_t I0 = kSub; I0 < L; I0 += kSub) {
          const int64_t Ir = std::min<int64_t>(kSub, L - I0);
          for (int64_t J0 = 0; J0 < I0; J0 += kSub) {
            pair_factor(cg, K, I0, Ir, J0, kSub, w, true);
            float* Aij = w.A + I0 * C + J0;
            const float* dAij = w.dA + I0 * C + J0;
            tile_gemm(static_cast<int>(Ir), kSub, static_cast<int>(K), w.Qd, K, 1, w.KT + J0, C, Aij,
                      C, false);
            tile_gemm(static_cast<int>(Ir), static_cast<int>(K), kSub, dAij, C, 1, w.Kd, K,
                      w.dQacc + I0 * K, K, true);
            tile_gemm(kSub, static_cast<int>(K), static_cast<int>(Ir), dAij, 1, C, w.Qd, K,
                      w.dKacc + J0 * K, K, true);
          }
        }
        for (int64_t i = 0; i < L; ++i) {
          float* dqi = w.dQ + i * K;
          float* dki = w.dK + i * K;
          const float *eq = w.Eq + i * K, *dqa = w.dQacc + i * K;
          const float *ekb = w.eKb + i * K, *dka = w.dKacc + i * K;
          if (i >= kSub) {
#pragma omp simd
            for (int64_t c = 0; c < K; ++c) dqi[c] += eq[c] * dqa[c];
          }
#pragma omp simd
          for (int64_t c = 0; c < K; ++c) dki[c] += ekb[c] * dka[c];
        }
        // Diagonal blocks with the exact exponent: A_ij, and dA_ij into dq'_i and dk_j.
        for (int64_t I0 = 0; I0 < L; I0 += kSub) {
          const int64_t Ir = std::min<int64_t>(kSub, L - I0);
          for (int64_t i = I0; i < I0 + Ir; ++i) {
            const float* qi = w.Qc + i * K;
            const float* bq = cg.BQ + i * K;
            float* dqi = w.dQ + i * K;
            const int64_t jend = rwkv ? i : i + 1;
            for (int64_t j = I0; j < jend; ++j) {
              const float* kj = w.Kc + j * K;
              const float* bj = cg.Bc + j * K;
              float* dkj = w.dK + j * K;
              const float dAij = w.dA[i * C + j];
              float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
              for (int64_t c = 0; c < K; ++c) {
                const float e = exp_nonpos(bq[c] - bj[c]);
                acc += qi[c] * kj[c] * e;
                dqi[c] += dAij * kj[c] * e;
                dkj[c] += dAij * qi[c] * e;
              }
              w.A[i * C + j] = acc;
            }
          }
        }
      } else {
        tile_transpose(static_cast<int>(L), static_cast<int>(K), w.Kc, K, w.KT, C);
        intra_scores_scalar(p, cg, L, uh, w);
        // dA ⊙ decay on the decay-masked pairs (strictly lower for RWKV-6: its diagonal is the bonus).
        for (int64_t i = 0; i < L; ++i) {
          float* dAi = w.dA + i * C;
          const float bqi = cg.bqs[i];
          const int64_t jend = rwkv ? i : i + 1;
#pragma omp simd
          for (int64_t j = 0; j < jend; ++j) dAi[j] *= exp_nonpos(bqi - cg.bs[j]);
          if (rwkv) w.bon[i] = dAi[i];
          for (int64_t j = jend; j < L; ++j) dAi[j] = 0.0f;
        }
        tile_gemm(static_cast<int>(L), static_cast<int>(K), static_cast<int>(L), w.dA, C, 1, w.Kc, K,
                  w.dQ, K, true, TileTri::kLowerA);
        tile_gemm(static_cast<int>(L), static_cast<int>(K), static_cast<int>(L), w.dA, 1, C, w.Qc, K,
                  w.dK, K, true, TileTri::kUpperA);
      }
      if (rwkv && per_channel)
        for (int64_t i = 0; i < L; ++i) {
          w.bon[i] = w.dA[i * C + i];
        }
      if (rwkv) {  // A's diagonal holds the bonus: make sure it is set for the dv product
        for (int64_t i = 0; i < L; ++i) {
          const float* qi = w.Qc + i * K;
          const float* ki = w.Kc + i * K;
          float bonus = 0.0f;
#pragma omp simd reduction(+ : bonus)
          for (int64_t c = 0; c < K; ++c) bonus += qi[c] * uh[c] * ki[c];
          w.A[i * C + i] = bonus;
        }
      }

      // dv = A^T dO + Kh dS'.
      float* dVc = w.Oc;
      tile_gemm(static_cast<int>(L), static_cast<int>(V), static_cast<int>(L), w.A, 1, C, w.dOc, V,
                dVc, V, false, TileTri::kUpperA);
      tile_gemm(static_cast<int>(L), static_cast<int>(V), static_cast<int>(K), w.Kh, K, 1, w.dS, V,
                dVc, V, true);

      // Gate gradients: reverse sums of q' ⊙ dq'_dec (query reads B_i, or B_{i-1} for RWKV-6)
      // and -k ⊙ dk_dec, plus R at the last row.
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
              for (int64_t c = 0; c < K; ++c) {
                acc[c] -= ki[c] * dki[c];
                dgt[c] = acc[c];
                acc[c] += qi[c] * dqi[c];
              }
            } else {
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

      // Bonus (RWKV-6): o_i += (q'_i . (u ⊙ k_i)) v_i.
      if (rwkv) {
        for (int64_t i = 0; i < L; ++i) {
          const float b = w.bon[i];
          const float* qi = w.Qc + i * K;
          const float* ki = w.Kc + i * K;
          float* dqi = w.dQ + i * K;
          float* dki = w.dK + i * K;
          for (int64_t c = 0; c < K; ++c) {
            dqi[c] += b * uh[c] * ki[c];
            dki[c] += b * uh[c] * qi[c];
            w.dua[c] += b * qi[c] * ki[c];
          }
        }
      }

      // Carry dS to the previous chunk: dS = diag(eL) dS' + Qt^T dO.
      for (int64_t c = 0; c < K; ++c) {
        const float e = w.eL[c];
        float* row = w.dS + c * V;
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) row[j] *= e;
      }
      tile_gemm(static_cast<int>(K), static_cast<int>(V), static_cast<int>(L), w.Qt, 1, K, w.dOc, V,
                w.dS, V, true);

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
