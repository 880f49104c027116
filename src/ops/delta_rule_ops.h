// Delta-rule ops (kept apart from ops.h so that only the delta-rule layers see them): DeltaNet /
// Gated DeltaNet (kernels/linear/delta_rule.h) and the RWKV-7 generalised delta rule, diagonal plus
// low rank (kernels/linear/dplr_delta_rule.h).
//
// Sequence ops take an optional initial state and return the final state as a second output, both
// differentiable, so a layer can train over one sequence or continue from a carried state (prefill).
// Step ops advance a state by one token in place for decoding: O(K V) per head, no autograd.
// States are [B, H, K, V] (rows are key channels), fp32.
#pragma once

#include "autograd/variable.h"

namespace sw::ops {

struct RecurrentOutput {
  Variable o;      // [B, T, H, V]
  Variable state;  // [B, H, K, V] after the last token
};

// Gated delta rule, per (b, h): S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,
// o_t = scale S_t^T q_t (DeltaNet when g is null). Runs the chunkwise (WY/UT) kernel forward and
// backward with `chunk` tokens per chunk (fla's default 64). Keys are expected L2-normalised.
RecurrentOutput delta_rule(const Variable& q,     // [B, T, H, K]
                           const Variable& k,     // [B, T, H, K]
                           const Variable& v,     // [B, T, H, V]
                           const Variable& beta,  // [B, T, H]
                           const Variable* g,     // [B, T, H] log decay (<= 0), or null
                           const Variable* h0,    // [B, H, K, V], or null (zero state)
                           double scale, int64_t chunk = 64);

// One decode token: advances `state` [B, H, K, V] in place and returns o [B, 1, H, V].
Tensor delta_rule_step(const Tensor& q,     // [B, 1, H, K]
                       const Tensor& k,     // [B, 1, H, K]
                       const Tensor& v,     // [B, 1, H, V]
                       const Tensor& beta,  // [B, 1, H]
                       const Tensor* g,     // [B, 1, H] or null
                       Tensor& state, double scale);

// RWKV-7 DPLR delta rule, per (b, h):
//   S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,   o_t = scale S_t^T r_t.
// Forward runs the chunkwise kernel (`chunk` tokens, fla's default 16); the backward is the
// recurrent BPTT kernel (it recomputes the states from h0, so it does not depend on the forward form).
RecurrentOutput dplr_delta_rule(const Variable& r,   // [B, T, H, K]
                                const Variable& w,   // [B, T, H, K] log decay (<= 0)
                                const Variable& k,   // [B, T, H, K]
                                const Variable& v,   // [B, T, H, V]
                                const Variable& a,   // [B, T, H, K]
                                const Variable& b,   // [B, T, H, K]
                                const Variable* h0,  // [B, H, K, V], or null (zero state)
                                double scale, int64_t chunk = 16);

// One decode token of the DPLR rule: advances `state` in place and returns o [B, 1, H, V].
Tensor dplr_delta_rule_step(const Tensor& r,  // [B, 1, H, K]
                            const Tensor& w,  // [B, 1, H, K]
                            const Tensor& k,  // [B, 1, H, K]
                            const Tensor& v,  // [B, 1, H, V]
                            const Tensor& a,  // [B, 1, H, K]
                            const Tensor& b,  // [B, 1, H, K]
                            Tensor& state, double scale);

}  // namespace sw::ops
