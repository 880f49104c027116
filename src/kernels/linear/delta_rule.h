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

// Recurrent backward (BPTT). States are checkpointed every kRecurrentSegment tokens and the states
// of one segment are recomputed into scratch, so memory is O(T/seg K V + seg K V) per thread.
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
// decay factors are exp(b_i - b_j) with b the local inclusive cumsum of g and j <= i, so every
// exponent is <= 0 (stable for any gate strength).
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
// head, in scratch), then walks chunks in reverse with the exact chunk gradient (back-propagation
// through the WY/UT triangular solve), recomputing each chunk's W, U from its boundary state.
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

// Small row-major matrix helpers shared by the delta-rule family (defined in delta_rule.cpp, also
// used by dplr_delta_rule.cpp). Internal: no argument checks, C is accumulated into.
namespace delta_detail {
// C[M, N] += alpha * A[M, Kd] * B[Kd, N]
void mm_nn(int M, int N, int Kd, float alpha, const float* A, int lda, const float* B, int ldb, float* C, int ldc);
// C[M, N] += alpha * A^T * B with A stored [Kd, M], B [Kd, N]
void mm_tn(int M, int N, int Kd, float alpha, const float* A, int lda, const float* B, int ldb, float* C, int ldc);
// dst[cols, rows] = src[rows, cols]^T
void transpose(const float* src, int rows, int cols, float* dst);
}  // namespace delta_detail

}  // namespace sw::kernels
