// Lightning Attention-2 (Qin et al. 2024, arXiv 2401.04658; MiniMax-01 arXiv 2501.08313): causal linear
// attention with one fixed decay per head, computed block by block with the intra/inter split
// (research/methods.md 4.4, fla.md 2.2, survey.md "chunkwise parallel").
//
// Per batch b and head h, lambda = exp(g_h) (g_h <= 0), state S [K, V] (rows are key channels),
// q' = scale * q (MiniMax uses scale 1):
//   S_t = lambda S_{t-1} + k_t v_t^T,   o_t = S_t^T q'_t
// i.e. exactly gla_forward_* with GlaGate::kHeadConst (kernels/linear/gated_linear_attention.h) and
// the f64 reference kernels/ref/gated_linear_attention_ref.h in that mode.
//
// Block algorithm, blocks of C tokens (the last one may hold L < C), local index i, j in [0, L):
//   intra  O  = ((Q' K^T) ⊙ M) V           M[i, j] = lambda^(i - j) for i >= j, else 0
//   inter  O += diag(lambda^(i + 1)) Q' S   S = state entering the block
//   state  S' = lambda^L S + (diag(lambda^(L - 1 - j)) K)^T V
// M and the powers lambda^p (p = 0..C) are one table per head, built once per call from
// exp(p * g) in double: no cumulative sums, no differences of them.
// Work is split in two phases so that every block's products can run in parallel even for one
// sequence: a sequential state pass per (b, h) (the K x V x L state GEMMs only), then the intra and
// inter products of all (b, h, block) items in parallel. The backward adds a sequential reverse pass
// for the state gradients dS, then again all blocks in parallel. The per-head dg is summed per block
// with block-local weights:
//   dg_block = sum_i (i + 1) (q_i . dq_i - k_i . dk_i) + L <S', dS'>
// (S', dS' the state leaving the block and its gradient), then over blocks and batch in a fixed order
// (deterministic for any thread count).
//
// Layout: activations [B, T, H, D] row-major contiguous, states [B, H, K, V], all fp32; T need not be
// a multiple of C, T == 0 is allowed (ht = h0, dh0 = dht). Outputs must not alias inputs.
// Threads: OpenMP inside; call from outside any parallel region.
// Speed (2-core AMD EPYC Zen1, AVX2, B = 1, T = 2048, K = V = 64, C = 64; median of interleaved
// repeats, tests/kernels/lightning_attention_test.cpp LightningSpeed): one thread, H = 1: forward
// 2.1 ms, backward 5.4 ms, 1.6-1.8x faster than gla_forward_chunk / gla_backward_chunk in
// kHeadConst mode; H = 8: 1.3-1.45x (forward), 1.6-1.75x (backward). Two threads, H = 1 (the
// block-parallel phase): 2.3-2.6x forward, 2.6-2.8x backward.
// Scratch (core/scratch.h): thread-local slot 0 (block tiles) on every thread, and on the calling
// thread slot 2 (decay tables, per-block dg partials), slot 3 (states entering each block, when the
// caller does not pass them) and slot 4 (state gradients, backward).
#pragma once

#include <cstdint>

#include "kernels/linear/gated_linear_attention.h"

namespace sw::kernels {

using LightningDims = GlaDims;  // {batch B, seq_len T, heads H, key_dim K, value_dim V}

constexpr int64_t kLightningDefaultBlock = 64;

// Number of blocks of block_size tokens covering seq_len tokens (NB of block_states).
inline int64_t lightning_num_blocks(int64_t seq_len, int64_t block_size) {
  return (seq_len + block_size - 1) / block_size;
}

// Forward. block_states, if given, receives the state entering every block
// (block_states[b, h, 0] == h0) for the backward.
void lightning_forward(const LightningDims& dims, float scale,
                       int64_t block_size,    // C >= 1 (64 default; 32..128 useful)
                       const float* q,        // [B, T, H, K]
                       const float* k,        // [B, T, H, K]
                       const float* v,        // [B, T, H, V]
                       const float* g,        // [H] log decay per head, g <= 0
                       const float* h0,       // [B, H, K, V] initial state, or nullptr (zeros)
                       float* o,              // [B, T, H, V] out
                       float* ht,             // [B, H, K, V] final state out, or nullptr
                       float* block_states);  // [B, H, NB, K, V] out, or nullptr

// Backward of L(o, ht) given dL/do and dL/dht. block_states from the forward with the same
// block_size, or nullptr to recompute them (one state-only pass). dg is the sum over b and t for
// the per-head constant; dg and dh0 may be nullptr (skipped).
void lightning_backward(const LightningDims& dims, float scale, int64_t block_size,
                        const float* q,             // [B, T, H, K]
                        const float* k,             // [B, T, H, K]
                        const float* v,             // [B, T, H, V]
                        const float* g,             // [H]
                        const float* h0,            // [B, H, K, V] or nullptr
                        const float* block_states,  // [B, H, NB, K, V] or nullptr
                        const float* dout,          // [B, T, H, V] gradient of o
                        const float* dht,           // [B, H, K, V] gradient of ht, or nullptr
                        float* dq,                  // [B, T, H, K] out
                        float* dk,                  // [B, T, H, K] out
                        float* dv,                  // [B, T, H, V] out
                        float* dg,                  // [H] out, or nullptr
                        float* dh0);                // [B, H, K, V] out, or nullptr

}  // namespace sw::kernels
