// RWKV-7 generalised delta rule, diagonal plus low rank (DPLR) (fla.md 2.8): recurrent forward and
// backward, single-token step, and a chunkwise forward.
//
// Per (b, h), in our [K, V] state layout (rows are key channels):
//   S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T;      o_t = scale S_t^T r_t
// This is the transpose of fla's / RWKV-LM's [V, K] view S_t = S_{t-1} (diag(exp(w_t)) + a_t b_t^T)
// + v_t k_t^T (same numbers, S_ours = S_theirs^T). Both the decay and the low-rank term read S_{t-1}.
// RWKV-7 layers pass a = -kk, b = kk * alpha (kk the L2-normalised key, alpha the in-context learning
// rate), w = -exp(-0.5) sigmoid(.) and scale = 1. Must match ref::dplr_delta_rule_{fwd,bwd}.
//
// Layout: r, w, k, a, b [B, T, H, K]; v, o [B, T, H, V]; states [B, H, K, V]; all fp32. Optional
// pointers: h0 (zero), ht, dht (zero), dh0. Backward overwrites every non-null gradient output for
// the loss sum(o * do) + sum(ht * dht). Threads: OpenMP over (b, h).
#pragma once

namespace sw::kernels {

// Recurrent forward, one token at a time (the decode and reference path).
void dplr_delta_rule_recurrent_fwd(const float* r,   // [B, T, H, K]
                                   const float* w,   // [B, T, H, K] log decay (<= 0)
                                   const float* k,   // [B, T, H, K]
                                   const float* v,   // [B, T, H, V]
                                   const float* a,   // [B, T, H, K]
                                   const float* b,   // [B, T, H, K]
                                   const float* h0,  // [B, H, K, V] or nullptr
                                   float* o,         // [B, T, H, V]
                                   float* ht,        // [B, H, K, V] or nullptr
                                   int B, int T, int H, int K, int V, float scale);

// Recurrent backward (BPTT). States are checkpointed every 64 tokens and one segment's states are
// recomputed into scratch; no per-token states over the whole sequence.
void dplr_delta_rule_recurrent_bwd(const float* r,    // [B, T, H, K]
                                   const float* w,    // [B, T, H, K]
                                   const float* k,    // [B, T, H, K]
                                   const float* v,    // [B, T, H, V]
                                   const float* a,    // [B, T, H, K]
                                   const float* b,    // [B, T, H, K]
                                   const float* h0,   // [B, H, K, V] or nullptr
                                   const float* d_o,  // [B, T, H, V]
                                   const float* dht,  // [B, H, K, V] or nullptr
                                   float* dr,         // [B, T, H, K]
                                   float* dw,         // [B, T, H, K]
                                   float* dk,         // [B, T, H, K]
                                   float* dv,         // [B, T, H, V]
                                   float* da,         // [B, T, H, K]
                                   float* db,         // [B, T, H, K]
                                   float* dh0,        // [B, H, K, V] or nullptr
                                   int B, int T, int H, int K, int V, float scale);

// Decode: one token per (b, h), updating `state` in place.
void dplr_delta_rule_step(const float* r,  // [B, H, K]
                          const float* w,  // [B, H, K]
                          const float* k,  // [B, H, K]
                          const float* v,  // [B, H, V]
                          const float* a,  // [B, H, K]
                          const float* b,  // [B, H, K]
                          float* state,    // [B, H, K, V] in/out
                          float* o,        // [B, H, V]
                          int B, int H, int K, int V, float scale);

// Chunkwise forward (fla's dplr chunk algorithm), chunk size C >= 1 (16 typical). Within a chunk the
// per-channel decays are factored around the chunk start (r e^{gc}, k e^{-gc}, ...), exact in exact
// arithmetic; a chunk whose cumulative decay exceeds kDplrChunkMaxLogDecay in some channel (where
// e^{-gc} could overflow fp32) is processed token by token instead, so any w is safe.
constexpr float kDplrChunkMaxLogDecay = 60.f;
void dplr_delta_rule_chunk_fwd(const float* r,   // [B, T, H, K]
                               const float* w,   // [B, T, H, K]
                               const float* k,   // [B, T, H, K]
                               const float* v,   // [B, T, H, V]
                               const float* a,   // [B, T, H, K]
                               const float* b,   // [B, T, H, K]
                               const float* h0,  // [B, H, K, V] or nullptr
                               float* o,         // [B, T, H, V]
                               float* ht,        // [B, H, K, V] or nullptr
                               int B, int T, int H, int K, int V, float scale, int C);

}  // namespace sw::kernels
