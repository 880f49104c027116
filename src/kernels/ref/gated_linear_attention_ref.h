// f64 reference for the gated-linear-attention family (kernels/linear/gated_linear_attention.h):
// the recurrence written out token by token, and its backward by plain BPTT over stored states.
//
//   standard: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,  o_t = S_t^T (scale q_t)
//   RWKV-6 (u given): o_t = S_{t-1}^T (scale q_t) + ((scale q_t) . (u ⊙ k_t)) v_t, same update
// (fla linear_attn/simple_gla/gla naive, rwkv6 naive_recurrent_rwkv6; research/fla.md 2.1-2.7).
// The backward differentiates the update directly (dg_t = exp(g_t) ⊙ rowsum(dS_t ⊙ S_{t-1})), i.e.
// NOT the reverse-cumsum identity the fp32 kernels use, so the tests compare two derivations.
// Layout as the kernels: [B, T, H, D] activations, [B, H, K, V] states. Slow; tests only.
#pragma once

#include "kernels/linear/gated_linear_attention.h"

namespace sw::kernels::ref {

void gla_forward_ref(const GlaDims& dims, GlaGate gate, double scale,
                     const double* q,   // [B, T, H, K]
                     const double* k,   // [B, T, H, K]
                     const double* v,   // [B, T, H, V]
                     const double* g,   // nullptr | [H] | [B, T, H] | [B, T, H, K]
                     const double* u,   // [H, K] or nullptr
                     const double* h0,  // [B, H, K, V] or nullptr
                     double* o,         // [B, T, H, V]
                     double* ht);       // [B, H, K, V] or nullptr

// Gradients of L = <dout, o> + <dht, ht>. dg: [B, T, H] | [B, T, H, K] | [H] (kHeadConst: sum over
// b, t) | unused (kNone). du: [H, K] when u given. All outputs written (dg/du/dh0 may be nullptr).
void gla_backward_ref(const GlaDims& dims, GlaGate gate, double scale,
                      const double* q, const double* k, const double* v, const double* g,
                      const double* u, const double* h0,
                      const double* dout,  // [B, T, H, V]
                      const double* dht,   // [B, H, K, V] or nullptr
                      double* dq,          // [B, T, H, K]
                      double* dk,          // [B, T, H, K]
                      double* dv,          // [B, T, H, V]
                      double* dg,          // by gate, or nullptr
                      double* du,          // [H, K] or nullptr
                      double* dh0);        // [B, H, K, V] or nullptr

}  // namespace sw::kernels::ref
