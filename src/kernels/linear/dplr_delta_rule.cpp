// RWKV-7 / DPLR delta rule: recurrent forward, BPTT backward, decode step, chunkwise forward.
//
// Must match ref::dplr_delta_rule_{fwd,bwd} (kernels/ref/delta_rule_ref.h). State [K, V] per
// (b, h): S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T, o_t = scale S_t^T r_t
// (the transpose of fla's [V, K] view). Layout: r, w, k, a, b [B, T, H, K]; v, o [B, T, H, V].
#include "kernels/linear/dplr_delta_rule.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/linear/delta_rule.h"

// Vec16 helpers are all inline (see delta_rule.h): the -Wpsabi note of x86-64-v3 builds is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace sw::kernels {
namespace {

using delta_detail::Arena;
using delta_detail::exp_vec;
using delta_detail::hsum;
using delta_detail::kLanes;
using delta_detail::ld;
using delta_detail::mm_nn;
using delta_detail::mm_tn;
using delta_detail::padded;
using delta_detail::st;
using delta_detail::transpose;
using delta_detail::Vec16;

// Tokens per checkpoint segment in the recurrent backward.
constexpr int kRecurrentSegment = 64;

inline Arena arena(int slot, size_t n) {
  float* p = scratch_floats(slot, n);
  return {p, p + n};
}

struct HeadView {
  size_t base;
  size_t stride;
};
inline HeadView head_view(int b, int h, int T, int H, int D) {
  return {(size_t(b) * T * H + h) * D, size_t(H) * D};
}

inline void load_state(float* S, const float* h0, size_t off, size_t KV) {
  if (h0)
    std::memcpy(S, h0 + off, KV * sizeof(float));
  else
    std::fill(S, S + KV, 0.f);
}

// One token on value columns [j0, j0 + kLanes<T> * NV) of S [K, V] (columns are independent):
// sa = S^T a, then row c <- ew_c row + b_c sa + k_c v, and o = scale S_t^T r accumulated while the new
// rows are in registers. ew = exp(w) [K].
template <class T, int NV, bool kOut>
inline void step_columns(const float* Sin, float* Sout, int K, int V, int j0, const float* __restrict r,
                         const float* __restrict ew, const float* __restrict k, const float* __restrict v,
                         const float* __restrict a, const float* __restrict b, float scale, float* __restrict o) {
  constexpr int W = kLanes<T>;
  // Two accumulator sets (even / odd rows) halve the FMA latency chains of the row loops.
  T sa[NV], sa1[NV], vv[NV], ov[NV], ov1[NV];
  for (int x = 0; x < NV; ++x) {
    sa[x] = sa1[x] = ov[x] = ov1[x] = T{};
    vv[x] = ld<T>(v + j0 + W * x);
  }
  int c = 0;
  for (; c + 1 < K; c += 2) {
    const float* row0 = Sin + size_t(c) * V + j0;
    const float* row1 = row0 + V;
    const float a0 = a[c], a1 = a[c + 1];
    for (int x = 0; x < NV; ++x) {
      sa[x] += a0 * ld<T>(row0 + W * x);
      sa1[x] += a1 * ld<T>(row1 + W * x);
    }
  }
  if (c < K)
    for (int x = 0; x < NV; ++x) sa[x] += a[c] * ld<T>(Sin + size_t(c) * V + j0 + W * x);
  for (int x = 0; x < NV; ++x) sa[x] += sa1[x];
  for (c = 0; c < K; ++c) {
    const float* in = Sin + size_t(c) * V + j0;
    float* out = Sout + size_t(c) * V + j0;
    const float dc = ew[c], bc = b[c], kc = k[c];
    for (int x = 0; x < NV; ++x) {
      const T nv = dc * ld<T>(in + W * x) + bc * sa[x] + kc * vv[x];
      st<T>(out + W * x, nv);
      if constexpr (kOut) {
        if (c & 1)
          ov1[x] += r[c] * nv;
        else
          ov[x] += r[c] * nv;
      }
    }
  }
  if constexpr (kOut)
    for (int x = 0; x < NV; ++x) st<T>(o + j0 + W * x, scale * (ov[x] + ov1[x]));
}

// Sin == Sout updates in place; distinct pointers write the next state elsewhere (segment recompute).
template <bool kOut>
inline void dplr_step_one(const float* Sin, float* Sout, const float* r, const float* ew, const float* k,
                          const float* v, const float* a, const float* b, float scale, float* o, int K, int V) {
  int j0 = 0;
  for (; j0 + 64 <= V; j0 += 64) step_columns<Vec16, 4, kOut>(Sin, Sout, K, V, j0, r, ew, k, v, a, b, scale, o);
  for (; j0 + 16 <= V; j0 += 16) step_columns<Vec16, 1, kOut>(Sin, Sout, K, V, j0, r, ew, k, v, a, b, scale, o);
  for (; j0 < V; ++j0) step_columns<float, 1, kOut>(Sin, Sout, K, V, j0, r, ew, k, v, a, b, scale, o);
}

// BPTT of one token on value columns [j0, ...) with P = S_{t-1}, dS = dL/dS_t without the read-out.
// Column-local: sa = P^T a, dv = dS_t^T k, dsa = dS_t^T b and the dS update. Row sums over the columns
// accumulate across tiles into rows[5][K] = {P do, dS v, rowsum(dS * P), dS sa, P dsa}; scalars
// acc[0] += sa . do, acc[1] += v . do. rk = r . k, rb = r . b (scaled by `scale` below).
template <class T, int NV>
inline void bptt_columns(const float* __restrict P, float* __restrict dS, int K, int V, int j0,
                         const float* __restrict r, const float* __restrict ew, const float* __restrict k,
                         const float* __restrict v, const float* __restrict a, const float* __restrict b,
                         const float* __restrict dout, float scale, float rk, float rb, float* __restrict rows,
                         float* __restrict dvt, float* acc) {
  constexpr int W = kLanes<T>;
  float* Pdo = rows;
  float* dSv = rows + K;
  float* dSP = rows + 2 * size_t(K);
  float* dSsa = rows + 3 * size_t(K);
  float* Pdsa = rows + 4 * size_t(K);
  T sa[NV], dSk[NV], dSb[NV], dov[NV], vv[NV];
  for (int x = 0; x < NV; ++x) {
    sa[x] = dSk[x] = dSb[x] = T{};
    dov[x] = ld<T>(dout + j0 + W * x);
    vv[x] = ld<T>(v + j0 + W * x);
  }
  for (int c = 0; c < K; ++c) {
    const float* Pr = P + size_t(c) * V + j0;
    const float* Dr = dS + size_t(c) * V + j0;
    const float ac = a[c], kc = k[c], bc = b[c];
    T pd{}, dv_{}, dp{};
    for (int x = 0; x < NV; ++x) {
      const T p = ld<T>(Pr + W * x), d = ld<T>(Dr + W * x);
      sa[x] += ac * p;
      dSk[x] += kc * d;
      dSb[x] += bc * d;
      pd += p * dov[x];
      dv_ += d * vv[x];
      dp += d * p;
    }
    Pdo[c] += hsum(pd);
    dSv[c] += hsum(dv_);
    dSP[c] += hsum(dp);
  }
  T dsa[NV], sado{}, vdo{};
  for (int x = 0; x < NV; ++x) {
    st<T>(dvt + j0 + W * x, dSk[x] + (scale * rk) * dov[x]);
    dsa[x] = dSb[x] + (scale * rb) * dov[x];
    sado += sa[x] * dov[x];
    vdo += vv[x] * dov[x];
  }
  acc[0] += hsum(sado);
  acc[1] += hsum(vdo);
  for (int c = 0; c < K; ++c) {
    const float* Pr = P + size_t(c) * V + j0;
    float* Dr = dS + size_t(c) * V + j0;
    const float rc = scale * r[c], dc = ew[c], ac = a[c];
    T ds{}, pds{};
    for (int x = 0; x < NV; ++x) {
      const T d = ld<T>(Dr + W * x), p = ld<T>(Pr + W * x);
      ds += d * sa[x];
      pds += p * dsa[x];
      st<T>(Dr + W * x, dc * (d + rc * dov[x]) + ac * dsa[x]);
    }
    dSsa[c] += hsum(ds);
    Pdsa[c] += hsum(pds);
  }
}

}  // namespace

void dplr_delta_rule_recurrent_fwd(const float* r, const float* w, const float* k, const float* v, const float* a,
                                   const float* b, const float* h0, float* o, float* ht, int B, int T, int H, int K,
                                   int V, float scale) {
  const size_t KV = size_t(K) * V;
#pragma omp parallel for schedule(dynamic)
  for (int bh = 0; bh < B * H; ++bh) {
    const int bi = bh / H, h = bh % H;
    Arena ar = arena(0, padded(KV) + padded(K));
    float* S = ar.take(KV);
    float* ew = ar.take(K);
    load_state(S, h0, size_t(bh) * KV, KV);
    const HeadView vk = head_view(bi, h, T, H, K), vv = head_view(bi, h, T, H, V);
    for (int t = 0; t < T; ++t) {
      const size_t ok = vk.base + t * vk.stride, ov = vv.base + t * vv.stride;
      exp_vec(w + ok, ew, K);
      dplr_step_one<true>(S, S, r + ok, ew, k + ok, v + ov, a + ok, b + ok, scale, o + ov, K, V);
    }
    if (ht) std::memcpy(ht + size_t(bh) * KV, S, KV * sizeof(float));
  }
}

void dplr_delta_rule_step(const float* r, const float* w, const float* k, const float* v, const float* a,
                          const float* b, float* state, float* o, int B, int H, int K, int V, float scale) {
  const size_t KV = size_t(K) * V;
#pragma omp parallel for schedule(static) if (size_t(B) * H * KV >= (1u << 16))
  for (int bh = 0; bh < B * H; ++bh) {
    float* ew = scratch_floats(0, K);
    const size_t ok = size_t(bh) * K;
    exp_vec(w + ok, ew, K);
    float* S = state + size_t(bh) * KV;
    dplr_step_one<true>(S, S, r + ok, ew, k + ok, v + size_t(bh) * V, a + ok, b + ok, scale, o + size_t(bh) * V, K,
                        V);
  }
}

// BPTT per step with P = S_{t-1}, sa = P^T a, S_t = D P + b sa^T + k v^T (D = diag(exp(w))), and dS
// the gradient w.r.t. S_t without this step's read-out (added analytically as scale r do^T):
//   dr = scale S_t do = scale (D P do + (sa . do) b + (v . do) k)
//   dv = dS_t^T k;  dsa = dS_t^T b;  dk = dS_t v;  db = dS_t sa;  dw = exp(w) rowsum(dS_t * P)
//   da = P dsa;  dS_{t-1} = D dS_t + a dsa^T
void dplr_delta_rule_recurrent_bwd(const float* r, const float* w, const float* k, const float* v, const float* a,
                                   const float* b, const float* h0, const float* d_o, const float* dht, float* dr,
                                   float* dw, float* dk, float* dv, float* da, float* db, float* dh0, int B, int T,
                                   int H, int K, int V, float scale) {
  const size_t KV = size_t(K) * V;
  const int nseg = (T + kRecurrentSegment - 1) / kRecurrentSegment;
#pragma omp parallel for schedule(dynamic)
  for (int bh = 0; bh < B * H; ++bh) {
    const int bi = bh / H, h = bh % H;
    Arena ar = arena(0, padded(size_t(nseg) * KV) + padded(size_t(kRecurrentSegment) * KV) + padded(KV) +
                            padded(K) + padded(5 * size_t(K)));
    float* ckpt = ar.take(size_t(nseg) * KV);
    float* seg = ar.take(size_t(kRecurrentSegment) * KV);
    float* dS = ar.take(KV);
    float* ew = ar.take(K);
    float* rows = ar.take(5 * size_t(K));
    const HeadView vk = head_view(bi, h, T, H, K), vv = head_view(bi, h, T, H, V);
    auto advance = [&](const float* Sin, float* Sout, int t) {
      const size_t ok = vk.base + t * vk.stride;
      exp_vec(w + ok, ew, K);
      dplr_step_one<false>(Sin, Sout, nullptr, ew, k + ok, v + vv.base + t * vv.stride, a + ok, b + ok, scale, nullptr,
                           K, V);
    };

    load_state(ckpt, h0, size_t(bh) * KV, KV);
    for (int n = 0; n + 1 < nseg; ++n) {
      float* S = ckpt + size_t(n + 1) * KV;
      std::memcpy(S, ckpt + size_t(n) * KV, KV * sizeof(float));
      for (int t = n * kRecurrentSegment; t < (n + 1) * kRecurrentSegment; ++t) advance(S, S, t);
    }

    if (dht)
      std::memcpy(dS, dht + size_t(bh) * KV, KV * sizeof(float));
    else
      std::fill(dS, dS + KV, 0.f);
    for (int n = nseg - 1; n >= 0; --n) {
      const int t0 = n * kRecurrentSegment, t1 = std::min(T, t0 + kRecurrentSegment);
      std::memcpy(seg, ckpt + size_t(n) * KV, KV * sizeof(float));
      for (int t = t0; t + 1 < t1; ++t) advance(seg + size_t(t - t0) * KV, seg + size_t(t - t0 + 1) * KV, t);
      for (int t = t1 - 1; t >= t0; --t) {
        const float* P = seg + size_t(t - t0) * KV;
        const size_t ok = vk.base + t * vk.stride, ov = vv.base + t * vv.stride;
        const float *rt = r + ok, *kt = k + ok, *at = a + ok, *bt = b + ok, *vt = v + ov, *dot_ = d_o + ov;
        exp_vec(w + ok, ew, K);
        float rk = 0.f, rb = 0.f;
        for (int c = 0; c < K; ++c) {
          rk += rt[c] * kt[c];
          rb += rt[c] * bt[c];
        }
        std::fill(rows, rows + 5 * size_t(K), 0.f);
        float acc[2] = {0.f, 0.f};
        int j0 = 0;
        for (; j0 + 64 <= V; j0 += 64)
          bptt_columns<Vec16, 4>(P, dS, K, V, j0, rt, ew, kt, vt, at, bt, dot_, scale, rk, rb, rows, dv + ov, acc);
        for (; j0 + 16 <= V; j0 += 16)
          bptt_columns<Vec16, 1>(P, dS, K, V, j0, rt, ew, kt, vt, at, bt, dot_, scale, rk, rb, rows, dv + ov, acc);
        for (; j0 < V; ++j0)
          bptt_columns<float, 1>(P, dS, K, V, j0, rt, ew, kt, vt, at, bt, dot_, scale, rk, rb, rows, dv + ov, acc);
        const float sado = acc[0], vdo = acc[1];
        const float *Pdo = rows, *dSv = rows + K, *dSP = rows + 2 * size_t(K), *dSsa = rows + 3 * size_t(K),
                    *Pdsa = rows + 4 * size_t(K);
        float *drt = dr + ok, *dwt = dw + ok, *dkt = dk + ok, *dat = da + ok, *dbt = db + ok;
        for (int c = 0; c < K; ++c) {
          const float rc = scale * rt[c], dc = ew[c];
          drt[c] = scale * (dc * Pdo[c] + sado * bt[c] + vdo * kt[c]);
          dkt[c] = dSv[c] + rc * vdo;
          dbt[c] = dSsa[c] + rc * sado;
          dwt[c] = dc * (dSP[c] + rc * Pdo[c]);
          dat[c] = Pdsa[c];
        }
      }
    }
    if (dh0) std::memcpy(dh0 + size_t(bh) * KV, dS, KV * sizeof(float));
  }
}

// Chunkwise forward. For a chunk starting from state S0 with pc_i = prod_{s <= i} exp(w_s) per channel
// (running product, as accurate as the recurrence's own decays) and pc_{-1} = 1:
//   rt = r pc_i, kt = k / pc_j, bt = b / pc_j, at = a pc_{i-1}
//   A_qk = rt kt^T, A_qb = rt bt^T (j <= i);   A_ak = at kt^T, A_ab = at bt^T (j < i)
//   sa_i = at_i S0 + sum_{j<i} A_ak[i,j] v_j + A_ab[i,j] sa_j      (forward substitution)
//   o = scale (rt S0 + A_qk V + A_qb SA)
//   S_L = diag(pc_L) S0 + (kt pc_L)^T V + (bt pc_L)^T SA
// 1 / pc is bounded by exp(kDplrChunkMaxLogDecay) when the chunk passes the range check.
void dplr_delta_rule_chunk_fwd(const float* r, const float* w, const float* k, const float* v, const float* a,
                               const float* b, const float* h0, float* o, float* ht, int B, int T, int H, int K,
                               int V, float scale, int C) {
  SW_DASSERT(C >= 1);
  const size_t KV = size_t(K) * V, CK = size_t(C) * K, CV = size_t(C) * V, CC = size_t(C) * C;
  const float min_pc = std::exp(-kDplrChunkMaxLogDecay);
#pragma omp parallel for schedule(dynamic)
  for (int bh = 0; bh < B * H; ++bh) {
    const int bi = bh / H, h = bh % H;
    Arena ar = arena(0, padded(KV) + 10 * padded(CK) + 3 * padded(CV) + 4 * padded(CC));
    float* S = ar.take(KV);
    float* rt = ar.take(CK);
    float* kt = ar.take(CK);
    float* bt = ar.take(CK);
    float* at = ar.take(CK);
    float* ktT = ar.take(CK);  // [K, L]
    float* btT = ar.take(CK);  // [K, L]
    float* pc = ar.take(CK);   // [L, K] running decay products
    float* ew = ar.take(CK);   // [L, K] exp(w)
    float* kd = ar.take(CK);   // [L, K] kt pc_L
    float* bd = ar.take(CK);   // [L, K] bt pc_L
    float* vc = ar.take(CV);
    float* SA = ar.take(CV);
    float* O = ar.take(CV);
    float* Aqk = ar.take(CC);
    float* Aqb = ar.take(CC);
    float* Aak = ar.take(CC);
    float* Aab = ar.take(CC);
    load_state(S, h0, size_t(bh) * KV, KV);
    const HeadView vk = head_view(bi, h, T, H, K), vv = head_view(bi, h, T, H, V);
    for (int t0 = 0; t0 < T; t0 += C) {
      const int L = std::min(C, T - t0);
      for (int i = 0; i < L; ++i) exp_vec(w + vk.base + size_t(t0 + i) * vk.stride, ew + size_t(i) * K, K);
      std::memcpy(pc, ew, K * sizeof(float));
      for (int i = 1; i < L; ++i)
        for (int c = 0; c < K; ++c) pc[i * K + c] = pc[(i - 1) * K + c] * ew[i * K + c];
      const float* pcL = pc + size_t(L - 1) * K;
      bool in_range = true;
      for (int c = 0; c < K; ++c) in_range &= pcL[c] >= min_pc;
      if (!in_range) {
        // Strong decay somewhere in this chunk: the token loop is exact and needs no 1 / pc.
        for (int i = 0; i < L; ++i) {
          const size_t ok = vk.base + size_t(t0 + i) * vk.stride, ov = vv.base + size_t(t0 + i) * vv.stride;
          dplr_step_one<true>(S, S, r + ok, ew + size_t(i) * K, k + ok, v + ov, a + ok, b + ok, scale, o + ov, K, V);
        }
        continue;
      }
      for (int i = 0; i < L; ++i) {
        const size_t ok = vk.base + size_t(t0 + i) * vk.stride;
        const float* __restrict pci = pc + size_t(i) * K;
        const float* __restrict pcp = i ? pc + size_t(i - 1) * K : nullptr;
        const float *ri = r + ok, *ki = k + ok, *ai = a + ok, *bi_ = b + ok;
        for (int c = 0; c < K; ++c) {
          const float inv = 1.f / pci[c];
          rt[i * K + c] = ri[c] * pci[c];
          kt[i * K + c] = ki[c] * inv;
          bt[i * K + c] = bi_[c] * inv;
          at[i * K + c] = pcp ? ai[c] * pcp[c] : ai[c];
          kd[i * K + c] = kt[i * K + c] * pcL[c];
          bd[i * K + c] = bt[i * K + c] * pcL[c];
        }
        std::memcpy(vc + size_t(i) * V, v + vv.base + size_t(t0 + i) * vv.stride, V * sizeof(float));
      }
      transpose(kt, L, K, ktT);
      transpose(bt, L, K, btT);
      mm_nn(L, L, K, 1.f, rt, K, ktT, L, Aqk, L, false);
      mm_nn(L, L, K, 1.f, rt, K, btT, L, Aqb, L, false);
      mm_nn(L, L, K, 1.f, at, K, ktT, L, Aak, L, false);
      mm_nn(L, L, K, -1.f, at, K, btT, L, Aab, L, false);  // negated: (I - A_ab) is unit lower
      for (int i = 0; i < L; ++i)
        for (int j = i; j < L; ++j) {
          if (j > i) Aqk[i * L + j] = Aqb[i * L + j] = 0.f;
          Aak[i * L + j] = Aab[i * L + j] = 0.f;
        }
      // SA = (I - A_ab)^{-1} (at S0 + A_ak V) by forward substitution.
      mm_nn(L, V, K, 1.f, at, K, S, V, SA, V, false);
      mm_nn(L, V, L, 1.f, Aak, L, vc, V, SA, V);
      delta_detail::solve_unit_lower(L, V, Aab, L, SA, V);
      mm_nn(L, V, K, scale, rt, K, S, V, O, V, false);
      mm_nn(L, V, L, scale, Aqk, L, vc, V, O, V);
      mm_nn(L, V, L, scale, Aqb, L, SA, V, O, V);
      for (int i = 0; i < L; ++i)
        std::memcpy(o + vv.base + size_t(t0 + i) * vv.stride, O + size_t(i) * V, V * sizeof(float));
      for (int c = 0; c < K; ++c) {
        float* __restrict row = S + size_t(c) * V;
        const float d = pcL[c];
        for (int j = 0; j < V; ++j) row[j] *= d;
      }
      mm_tn(K, V, L, 1.f, kd, K, vc, V, S, V);
      mm_tn(K, V, L, 1.f, bd, K, SA, V, S, V);
    }
    if (ht) std::memcpy(ht + size_t(bh) * KV, S, KV * sizeof(float));
  }
}

}  // namespace sw::kernels
