// RWKV-7 / DPLR delta rule: recurrent forward, BPTT backward, decode step, chunkwise forward.
//
// Must match ref::dplr_delta_rule_{fwd,bwd} (kernels/ref/delta_rule_ref.h). State [K, V] per
// (b, h): S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T, o_t = scale S_t^T r_t
// (the transpose of fla's [V, K] view). Layout: r, w, k, a, b [B, T, H, K]; v, o [B, T, H, V].
#include "kernels/linear/dplr_delta_rule.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/linear/delta_rule.h"

namespace sw::kernels {
namespace {

using delta_detail::mm_nn;
using delta_detail::mm_tn;
using delta_detail::transpose;

constexpr int kRecurrentSegment = 64;

inline float* carve(float*& p, size_t n) {
  float* r = p;
  p += (n + 15) / 16 * 16;
  return r;
}

// y = exp(x) elementwise, in a loop GCC vectorises (libm's expf is scalar here): Cody-Waite range
// reduction x = n ln2 + f, |f| <= ln2 / 2, degree-6 polynomial (Cephes expf coefficients, about
// 1 ulp), 2^n assembled in the exponent bits. Inputs below -87.3 give 0 (the decays we need never
// exceed 1, so no overflow handling beyond a clamp).
void exp_vec(const float* __restrict x, float* __restrict y, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    const float xi = std::min(x[i], 88.f);
    const float xc = std::max(xi, -87.f);
    const float nf = std::floor(xc * 1.44269504088896341f + 0.5f);
    float f = xc - nf * 0.693359375f;
    f = f - nf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.f;
    const int32_t e = (int32_t(nf) + 127) << 23;
    const float r = p * std::bit_cast<float>(e);
    y[i] = xi < -87.f ? 0.f : r;
  }
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

// One token on S [K, V] in place: sa = S^T a, then row c <- ew_c row + b_c sa + k_c v, and o = scale
// S_t^T r accumulated while the new rows are hot (o may be nullptr). ew = exp(w) [K], sa [V] work.
inline void dplr_step_one(float* __restrict S, const float* __restrict r, const float* __restrict ew,
                          const float* __restrict k, const float* __restrict v, const float* __restrict a,
                          const float* __restrict b, float scale, float* __restrict o, float* __restrict sa, int K,
                          int V) {
  std::fill(sa, sa + V, 0.f);
  for (int c = 0; c < K; ++c) {
    const float ac = a[c];
    const float* __restrict row = S + size_t(c) * V;
#pragma omp simd
    for (int j = 0; j < V; ++j) sa[j] += ac * row[j];
  }
  if (o) std::fill(o, o + V, 0.f);
  for (int c = 0; c < K; ++c) {
    const float dc = ew[c], bc = b[c], kc = k[c];
    float* __restrict row = S + size_t(c) * V;
    if (o) {
      const float rc = scale * r[c];
#pragma omp simd
      for (int j = 0; j < V; ++j) {
        const float x = dc * row[j] + bc * sa[j] + kc * v[j];
        row[j] = x;
        o[j] += rc * x;
      }
    } else {
#pragma omp simd
      for (int j = 0; j < V; ++j) row[j] = dc * row[j] + bc * sa[j] + kc * v[j];
    }
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
    float* p = scratch_floats(0, KV + size_t(V) + size_t(K) + 48);
    float* S = carve(p, KV);
    float* sa = carve(p, V);
    float* ew = carve(p, K);
    load_state(S, h0, size_t(bh) * KV, KV);
    const HeadView vk = head_view(bi, h, T, H, K), vv = head_view(bi, h, T, H, V);
    for (int t = 0; t < T; ++t) {
      const size_t ok = vk.base + t * vk.stride, ov = vv.base + t * vv.stride;
      exp_vec(w + ok, ew, K);
      dplr_step_one(S, r + ok, ew, k + ok, v + ov, a + ok, b + ok, scale, o + ov, sa, K, V);
    }
    if (ht) std::memcpy(ht + size_t(bh) * KV, S, KV * sizeof(float));
  }
}

void dplr_delta_rule_step(const float* r, const float* w, const float* k, const float* v, const float* a,
                          const float* b, float* state, float* o, int B, int H, int K, int V, float scale) {
  const size_t KV = size_t(K) * V;
#pragma omp parallel for schedule(static) if (size_t(B) * H * KV >= (1u << 16))
  for (int bh = 0; bh < B * H; ++bh) {
    float* p = scratch_floats(0, size_t(V) + size_t(K) + 32);
    float* sa = carve(p, V);
    float* ew = carve(p, K);
    const size_t ok = size_t(bh) * K;
    exp_vec(w + ok, ew, K);
    dplr_step_one(state + size_t(bh) * KV, r + ok, ew, k + ok, v + size_t(bh) * V, a + ok, b + ok, scale,
                  o + size_t(bh) * V, sa, K, V);
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
    float* p = scratch_floats(0, (size_t(nseg) + kRecurrentSegment + 1) * KV + 6 * size_t(V) + 8 * size_t(K) +
                                     16 * 16);
    float* ckpt = carve(p, size_t(nseg) * KV);
    float* seg = carve(p, size_t(kRecurrentSegment) * KV);
    float* dS = carve(p, KV);
    float* sa = carve(p, V);
    float* dSk = carve(p, V);
    float* dSb = carve(p, V);
    float* dsa = carve(p, V);
    float* ew = carve(p, K);
    float* Pdo = carve(p, K);
    float* dSv = carve(p, K);
    float* dSsa = carve(p, K);
    float* dSP = carve(p, K);
    const HeadView vk = head_view(bi, h, T, H, K), vv = head_view(bi, h, T, H, V);

    load_state(ckpt, h0, size_t(bh) * KV, KV);
    for (int n = 0; n + 1 < nseg; ++n) {
      float* S = ckpt + size_t(n + 1) * KV;
      std::memcpy(S, ckpt + size_t(n) * KV, KV * sizeof(float));
      for (int t = n * kRecurrentSegment; t < (n + 1) * kRecurrentSegment; ++t) {
        const size_t ok = vk.base + t * vk.stride;
        exp_vec(w + ok, ew, K);
        dplr_step_one(S, nullptr, ew, k + ok, v + vv.base + t * vv.stride, a + ok, b + ok, scale, nullptr, sa, K,
                      V);
      }
    }

    if (dht)
      std::memcpy(dS, dht + size_t(bh) * KV, KV * sizeof(float));
    else
      std::fill(dS, dS + KV, 0.f);
    for (int n = nseg - 1; n >= 0; --n) {
      const int t0 = n * kRecurrentSegment, t1 = std::min(T, t0 + kRecurrentSegment);
      std::memcpy(seg, ckpt + size_t(n) * KV, KV * sizeof(float));
      for (int t = t0; t + 1 < t1; ++t) {
        float* S = seg + size_t(t - t0 + 1) * KV;
        std::memcpy(S, seg + size_t(t - t0) * KV, KV * sizeof(float));
        const size_t ok = vk.base + t * vk.stride;
        exp_vec(w + ok, ew, K);
        dplr_step_one(S, nullptr, ew, k + ok, v + vv.base + t * vv.stride, a + ok, b + ok, scale, nullptr, sa, K,
                      V);
      }
      for (int t = t1 - 1; t >= t0; --t) {
        const float* P = seg + size_t(t - t0) * KV;
        const size_t ok = vk.base + t * vk.stride, ov = vv.base + t * vv.stride;
        const float *rt = r + ok, *kt = k + ok, *at = a + ok, *bt = b + ok, *vt = v + ov, *dot_ = d_o + ov;
        exp_vec(w + ok, ew, K);
        // Pass 1 over P and dS: sa = P^T a, P do, dS^T k, dS^T b, dS v, rowsum(dS * P); dS sa waits for sa.
        std::fill(sa, sa + V, 0.f);
        std::fill(dSk, dSk + V, 0.f);
        std::fill(dSb, dSb + V, 0.f);
        for (int c = 0; c < K; ++c) {
          const float* __restrict Pr = P + size_t(c) * V;
          const float* __restrict Dr = dS + size_t(c) * V;
          const float ac = at[c], kc = kt[c], bc = bt[c];
          float pd = 0.f, dv_ = 0.f, dp = 0.f;
#pragma omp simd reduction(+ : pd, dv_, dp)
          for (int j = 0; j < V; ++j) {
            sa[j] += ac * Pr[j];
            dSk[j] += kc * Dr[j];
            dSb[j] += bc * Dr[j];
            pd += Pr[j] * dot_[j];
            dv_ += Dr[j] * vt[j];
            dp += Dr[j] * Pr[j];
          }
          Pdo[c] = pd;
          dSv[c] = dv_;
          dSP[c] = dp;
        }
        float sado = 0.f, vdo = 0.f;
        for (int j = 0; j < V; ++j) {
          sado += sa[j] * dot_[j];
          vdo += vt[j] * dot_[j];
        }
        float rk = 0.f, rb = 0.f;
        for (int c = 0; c < K; ++c) {
          rk += rt[c] * kt[c];
          rb += rt[c] * bt[c];
        }
        float* dvt = dv + ov;
        for (int j = 0; j < V; ++j) {
          dvt[j] = dSk[j] + scale * rk * dot_[j];
          dsa[j] = dSb[j] + scale * rb * dot_[j];
        }
        // Pass 2 over P and dS: dS sa, P dsa, then dS_{t-1} = D (dS + scale r do^T) + a dsa^T.
        float* drt = dr + ok;
        float* dwt = dw + ok;
        float* dkt = dk + ok;
        float* dat = da + ok;
        float* dbt = db + ok;
        for (int c = 0; c < K; ++c) {
          float* __restrict Dr = dS + size_t(c) * V;
          const float* __restrict Pr = P + size_t(c) * V;
          const float rc = scale * rt[c], dc = ew[c], ac = at[c];
          float dssa = 0.f, pdsa = 0.f;
#pragma omp simd reduction(+ : dssa, pdsa)
          for (int j = 0; j < V; ++j) {
            dssa += Dr[j] * sa[j];
            pdsa += Pr[j] * dsa[j];
            Dr[j] = dc * (Dr[j] + rc * dot_[j]) + ac * dsa[j];
          }
          dSsa[c] = dssa;
          dat[c] = pdsa;
          drt[c] = scale * (dc * Pdo[c] + sado * bt[c] + vdo * kt[c]);
          dkt[c] = dSv[c] + rc * vdo;
          dbt[c] = dssa + rc * sado;
          dwt[c] = dc * (dSP[c] + rc * Pdo[c]);
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
    float* p = scratch_floats(0, KV + 10 * CK + 3 * CV + 4 * CC + 2 * size_t(K) + size_t(V) + 20 * 16);
    float* S = carve(p, KV);
    float* rt = carve(p, CK);
    float* kt = carve(p, CK);
    float* bt = carve(p, CK);
    float* at = carve(p, CK);
    float* ktT = carve(p, CK);  // [K, L]
    float* btT = carve(p, CK);  // [K, L]
    float* pc = carve(p, CK);   // [L, K] running decay products
    float* ew = carve(p, CK);   // [L, K] exp(w)
    float* kd = carve(p, CK);   // [L, K] kt pc_L
    float* bd = carve(p, CK);   // [L, K] bt pc_L
    float* vc = carve(p, CV);
    float* SA = carve(p, CV);
    float* O = carve(p, CV);
    float* Aqk = carve(p, CC);
    float* Aqb = carve(p, CC);
    float* Aak = carve(p, CC);
    float* Aab = carve(p, CC);
    float* sa = carve(p, V);
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
          dplr_step_one(S, r + ok, ew + size_t(i) * K, k + ok, v + ov, a + ok, b + ok, scale, o + ov, sa, K, V);
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
      const size_t LL = size_t(L) * L;
      std::fill(Aqk, Aqk + LL, 0.f);
      std::fill(Aqb, Aqb + LL, 0.f);
      std::fill(Aak, Aak + LL, 0.f);
      std::fill(Aab, Aab + LL, 0.f);
      mm_nn(L, L, K, 1.f, rt, K, ktT, L, Aqk, L);
      mm_nn(L, L, K, 1.f, rt, K, btT, L, Aqb, L);
      mm_nn(L, L, K, 1.f, at, K, ktT, L, Aak, L);
      mm_nn(L, L, K, 1.f, at, K, btT, L, Aab, L);
      for (int i = 0; i < L; ++i)
        for (int j = i; j < L; ++j) {
          if (j > i) Aqk[i * L + j] = Aqb[i * L + j] = 0.f;
          Aak[i * L + j] = Aab[i * L + j] = 0.f;
        }
      // SA = at S0 + A_ak V, then the A_ab part by forward substitution.
      std::fill(SA, SA + size_t(L) * V, 0.f);
      mm_nn(L, V, K, 1.f, at, K, S, V, SA, V);
      mm_nn(L, V, L, 1.f, Aak, L, vc, V, SA, V);
      for (int i = 1; i < L; ++i) {
        float* __restrict si = SA + size_t(i) * V;
        for (int j = 0; j < i; ++j) {
          const float x = Aab[i * L + j];
          const float* __restrict sj = SA + size_t(j) * V;
#pragma omp simd
          for (int c = 0; c < V; ++c) si[c] += x * sj[c];
        }
      }
      std::fill(O, O + size_t(L) * V, 0.f);
      mm_nn(L, V, K, 1.f, rt, K, S, V, O, V);
      mm_nn(L, V, L, 1.f, Aqk, L, vc, V, O, V);
      mm_nn(L, V, L, 1.f, Aqb, L, SA, V, O, V);
      for (int i = 0; i < L; ++i) {
        float* __restrict dst = o + vv.base + size_t(t0 + i) * vv.stride;
        const float* __restrict src = O + size_t(i) * V;
#pragma omp simd
        for (int j = 0; j < V; ++j) dst[j] = scale * src[j];
      }
      for (int c = 0; c < K; ++c) {
        float* __restrict row = S + size_t(c) * V;
        const float d = pcL[c];
#pragma omp simd
        for (int j = 0; j < V; ++j) row[j] *= d;
      }
      mm_tn(K, V, L, 1.f, kd, K, vc, V, S, V);
      mm_tn(K, V, L, 1.f, bd, K, SA, V, S, V);
    }
    if (ht) std::memcpy(ht + size_t(bh) * KV, S, KV * sizeof(float));
  }
}

}  // namespace sw::kernels
