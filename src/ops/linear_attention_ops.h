// Gated-linear-attention ops (kept apart from ops.h so that only the linear-attention layers see them):
// one differentiable sequence op over kernels/linear/gated_linear_attention.h for every layer whose
// state decays diagonally (linear attention, RetNet, GLA, HGRN2, Mamba2 SSD, RWKV-6), its single-token
// decode step, and the running-sum normaliser of linear attention.
//
// Per batch b and head h, state S [K, V] (rows are key channels), q' = scale * q:
//   standard read-out (u null):  S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,  o_t = S_t^T q'_t
//   RWKV-6 read-out (u given):   o_t = S_{t-1}^T q'_t + (q'_t . (u ⊙ k_t)) v_t, same update
// The log decay g comes in the kernel's four shapes (kernels::GlaGate): none (null), one constant
// per head [H], one per head and token [B, T, H], one per key channel [B, T, H, K].
#pragma once

#include "autograd/variable.h"
#include "kernels/linear/gated_linear_attention.h"

namespace sw::ops {

struct GlaOutput {
  Variable o;      // [B, T, H, V]
  Variable state;  // [B, H, K, V] after the last token
};

// The sequence op, with an optional initial state and the final state as a second output; both
// are differentiable, so a layer can train over one sequence or continue from a carried state.
// When a gradient will be needed it runs the chunkwise kernel (chunk_size tokens per chunk) and
// keeps the state entering each chunk for the chunkwise backward (1.3-2x faster than BPTT on this
// CPU); when none will be (inference prefill) it runs the recurrent kernel, the faster forward
// when no chunk states are needed (kernels/linear/gated_linear_attention.h).
GlaOutput gated_linear_attention(const Variable& q,   // [B, T, H, K]
                                 const Variable& k,   // [B, T, H, K]
                                 const Variable& v,   // [B, T, H, V]
                                 kernels::GlaGate gate,
                                 const Variable* g,   // null | [H] | [B, T, H] | [B, T, H, K] (by gate)
                                 const Variable* u,   // [H, K] RWKV-6 bonus, or null
                                 const Variable* h0,  // [B, H, K, V], or null (zero state)
                                 double scale, int64_t chunk_size = 32);

// One decode token for every (batch, head): advances `state` [B, H, K, V] in place (gla_step) and
// returns o [B, 1, H, V]. O(K V) per head, no autograd.
Tensor gated_linear_attention_step(const Tensor& q,  // [B, 1, H, K]
                                   const Tensor& k,  // [B, 1, H, K]
                                   const Tensor& v,  // [B, 1, H, V]
                                   kernels::GlaGate gate,
                                   const Tensor* g,  // null | [H] | [B, 1, H] | [B, 1, H, K]
                                   const Tensor* u,  // [H, K] or null
                                   Tensor& state, double scale);

// Linear attention's running-sum normaliser (Katharopoulos et al.; fla linear_attn normalize=True):
// the layer appends a ones column to v, so the kernel's last output channel is the denominator
// scale * q_t . sum_{j<=t} k_j (a positive feature map makes it positive); this divides the other
// channels by it: y[..., i] = x[..., i] / (x[..., V] + eps). x [..., V + 1] -> y [..., V].
Variable linear_attention_normalize(const Variable& x, double eps);

// Splits x [..., sum(sizes)] along its last dim into contiguous pieces [..., sizes[i]] (fused
// projections: Mamba2's in_proj into z, xBC, dt). One op for all pieces, so the backward writes
// one gradient buffer instead of one zero-filled full-size buffer per slice.
std::vector<Variable> split_last(const Variable& x, const std::vector<int64_t>& sizes);

// Each of the G groups of x serves n consecutive heads (Mamba2's B and C shared by the heads of a
// group; GQA-style sharing): y[b, t, g * n + j, :] = x[b, t, g, :]. The backward sums the n copies.
// x [B, T, G, D] -> y [B, T, G * n, D].
Variable repeat_heads(const Variable& x, int64_t n);

}  // namespace sw::ops
