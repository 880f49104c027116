// DeltaNet and Gated DeltaNet kernels (fla.md 2.5, 2.6, 2.11): recurrent, single-token step and
// chunkwise (WY/UT) forms, forward and backward.
//
// Per (b, h), with state S [K, V] (rows are key channels) and optional scalar log gate g (<= 0):
//   S' = exp(g_t) S_{t-1};   u_t = beta_t (v_t - S'^T k_t);   S_t = S' + k_t u_t^T;   o_t = scale S_t^T q_t
// i.e. S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, decay first then the delta
// update, exactly fla's gated_delta_rule (g == nullptr gives fla's delta_rule). Keys are expected
// L2-normalised by the layer; beta in (0, 1) or (0, 2). Must match ref::delta_rule_{fwd,bwd}.
//
// Layout: q, k [B, T, H, K]; v, o [B, T, H, V]; beta, g [B, T, H]; states [B, H, K, V]. All fp32.
// Optional pointers (nullptr allowed): g (no gate), h0 (zero initial state), ht, dht (zero), dg, dh0.
// With g == nullptr a non-null dg is written with zeros.
// Backward kernels overwrite every non-null gradient output; the loss is sum(o * do) + sum(ht * dht).
// Threads: OpenMP over (b, h).
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>

#include "core/error.h"

namespace sw::kernels {

// Recurrent forward: one token at a time. O(T K V) per head, no scratch beyond one state.
void delta_rule_recurrent_fwd(const float* q,     // [B, T, H, K]
                              const float* k,     // [B, T, H, K]
                              const float* v,     // [B, T, H, V]
                              const float* beta,  // [B, T, H]
                              const float* g,     // [B, T, H] or nullptr
                              const float* h0,    // [B, H, K, V] or nullptr
                              float* o,           // [B, T, H, V]
                              float* ht,          // [B, H, K, V] or nullptr
                              int B, int T, int H, int K, int V, float scale);

// Recurrent backward (BPTT, fla.md 2.11). States are checkpointed every 64 tokens and the states of
// one segment are recomputed into scratch, so memory is (T / 64 + 65) K V floats per thread.
void delta_rule_recurrent_bwd(const float* q,     // [B, T, H, K]
                              const float* k,     // [B, T, H, K]
                              const float* v,     // [B, T, H, V]
                              const float* beta,  // [B, T, H]
                              const float* g,     // [B, T, H] or nullptr
                              const float* h0,    // [B, H, K, V] or nullptr
                              const float* d_o,   // [B, T, H, V]
                              const float* dht,   // [B, H, K, V] or nullptr
                              float* dq,          // [B, T, H, K]
                              float* dk,          // [B, T, H, K]
                              float* dv,          // [B, T, H, V]
                              float* dbeta,       // [B, T, H]
                              float* dg,          // [B, T, H] or nullptr
                              float* dh0,         // [B, H, K, V] or nullptr
                              int B, int T, int H, int K, int V, float scale);

// Decode: one token per (b, h), updating `state` in place and writing o. Same math as one step of
// delta_rule_recurrent_fwd.
void delta_rule_step(const float* q,     // [B, H, K]
                     const float* k,     // [B, H, K]
                     const float* v,     // [B, H, V]
                     const float* beta,  // [B, H]
                     const float* g,     // [B, H] or nullptr
                     float* state,       // [B, H, K, V] in/out
                     float* o,           // [B, H, V]
                     int B, int H, int K, int V, float scale);

// Chunkwise forward (WY/UT form), chunk size C >= 1 (16..64 typical), any T. Within a chunk all
// decay factors are exp(b_i - b_j) with b the local inclusive cumsum of g (in double) and j <= i, so
// every exponent is <= 0 (stable for any gate strength; never exp(+cumsum)). Per chunk:
//   A = strict_lower(beta_i (k_i . k_j) exp(b_i - b_j));   N = (I + A)^{-1} (beta v - beta exp(b) k S0)
//   o = scale (exp(b) q S0 + tril(q k^T exp(b_i - b_j)) N);  S <- exp(b_L) S0 + (k exp(b_L - b))^T N
// (N = U - W S0 of the WY/UT form with T = (I + A)^{-1} diag(beta), W = T exp(b) k, U = T v.)
void delta_rule_chunk_fwd(const float* q,     // [B, T, H, K]
                          const float* k,     // [B, T, H, K]
                          const float* v,     // [B, T, H, V]
                          const float* beta,  // [B, T, H]
                          const float* g,     // [B, T, H] or nullptr
                          const float* h0,    // [B, H, K, V] or nullptr
                          float* o,           // [B, T, H, V]
                          float* ht,          // [B, H, K, V] or nullptr
                          int B, int T, int H, int K, int V, float scale, int C);

// Chunkwise backward: recomputes the chunk-boundary states (ceil(T/C) states of K*V floats per
// thread, scratch slot 1; no per-token states), then walks the chunks in reverse with the exact chunk
// gradient (back-propagation through the triangular solve), recomputing each chunk from its boundary
// state. dg is summed per token from the factors that involve it, so it stays accurate (no
// cancellation) under strong decay.
void delta_rule_chunk_bwd(const float* q,     // [B, T, H, K]
                          const float* k,     // [B, T, H, K]
                          const float* v,     // [B, T, H, V]
                          const float* beta,  // [B, T, H]
                          const float* g,     // [B, T, H] or nullptr
                          const float* h0,    // [B, H, K, V] or nullptr
                          const float* d_o,   // [B, T, H, V]
                          const float* dht,   // [B, H, K, V] or nullptr
                          float* dq,          // [B, T, H, K]
                          float* dk,          // [B, T, H, K]
                          float* dv,          // [B, T, H, V]
                          float* dbeta,       // [B, T, H]
                          float* dg,          // [B, T, H] or nullptr
                          float* dh0,         // [B, H, K, V] or nullptr
                          int B, int T, int H, int K, int V, float scale, int C);

// Internal helpers shared by delta_rule.cpp and dplr_delta_rule.cpp (defined in delta_rule.cpp):
// small row-major matrix products, triangular solves and a vectorised exp. No argument checks.
// Vec16 is a GCC vector extension (16 floats): the auto-vectoriser does not keep a register tile of
// accumulators across a loop, and short rows (64 floats) pay more in loop prologues than in FMAs.
// The helpers are inline, so the -Wpsabi note about passing 64-byte vectors without AVX-512
// (portable x86-64-v3 builds) concerns no real ABI boundary.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
namespace delta_detail {

typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));

inline Vec16 load16(const float* p) {
  Vec16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store16(float* p, Vec16 v) { __builtin_memcpy(p, &v, sizeof(v)); }
// Pairwise tree, so the reduction is not 15 dependent adds.
inline float hsum16(Vec16 v) {
  const Vec8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Vec4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// Column-tile code is written once over a lane type: Vec16 for full 16-column groups, float for the
// remaining columns of a dimension that is not a multiple of 16.
template <class T>
inline constexpr int kLanes = sizeof(T) / sizeof(float);
template <class T>
inline T ld(const float* p) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return *p;
  } else {
    return load16(p);
  }
}
template <class T>
inline void st(float* p, T v) {
  if constexpr (sizeof(T) == sizeof(float)) {
    *p = v;
  } else {
    store16(p, v);
  }
}
template <class T>
inline float hsum(T v) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return v;
  } else {
    return hsum16(v);
  }
}

// Cursor over one scratch buffer: hands out 64-byte-aligned blocks. Debug builds check the bound and
// fill each block with NaN, so a read before write shows up in the tests (fla's NaN poisoning).
inline size_t padded(size_t n) { return (n + 15) / 16 * 16; }
struct Arena {
  float* p;
  float* end;
  float* take(size_t n) {
    float* r = p;
    p += padded(n);
    SW_DASSERT(p <= end);
#ifndef NDEBUG
    std::fill(r, r + n, std::numeric_limits<float>::quiet_NaN());
#endif
    return r;
  }
};

// C[M, N] (+)= alpha * A[M, Kd] * B[Kd, N]; accumulate == false overwrites C.
void mm_nn(int M, int N, int Kd, float alpha, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
           bool accumulate = true);
// C[M, N] (+)= alpha * A^T * B with A stored [Kd, M], B [Kd, N].
void mm_tn(int M, int N, int Kd, float alpha, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
           bool accumulate = true);
// dst[cols, rows] = src[rows, cols]^T
void transpose(const float* src, int rows, int cols, float* dst);
// X[L, N] <- (I + strict_lower(A))^{-1} X, in place (forward substitution). A: [L, L], row stride lda.
void solve_unit_lower(int L, int N, const float* A, int lda, float* X, int ldx);
// X[L, N] <- (I + strict_lower(A))^{-T} X, in place (back substitution with the transpose).
void solve_unit_lower_t(int L, int N, const float* A, int lda, float* X, int ldx);
// y = exp(x) for x <= 88, vectorised (about 1 ulp); x < -87.33 gives 0.
void exp_vec(const float* x, float* y, int n);

}  // namespace delta_detail
#pragma GCC diagnostic pop

}  // namespace sw::kernels
