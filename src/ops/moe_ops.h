// Differentiable mixture-of-experts ops (survey section 5): the grouped-expert SwiGLU over a
// dropless dispatch plan, the gate lookup of a routing, and MoE++'s parameter-free experts.
// Routing itself (which experts a token goes to) is discrete and lives in nn/moe/router.h.
#pragma once

#include "autograd/variable.h"

namespace sw::ops {

// y [N, D] = sum_j gates[n, j] * SwiGLU_{idx[n, j]}(x[n]), SwiGLU_e(v) = Wd_e (silu(Wg_e v) * (Wu_e v)).
//   x [N, D] f32; w_gate, w_up [E, H, D]; w_down [E, D, H] (f32, or bf16 without gradients);
//   idx [N, k] i32 in [0, E) or -1 (slot not dispatched: contributes 0, its gate gets gradient 0);
//   gates [N, k] f32.
// Gradients: x, the three weights (experts no token chose get zero), gates.
Variable moe_swiglu(const Variable& x, const Variable& w_gate, const Variable& w_up, const Variable& w_down,
                    const Tensor& idx, const Variable& gates);

// gates [N, k]: g[n, j] = scores[n, sel[n, j]], divided by sum_j of those when renormalize
// (Mixtral / DeepSeek-V3's top-k renormalisation); sel -1 gives gate 0.
//   scores [N, E] f32 (positive when renormalize), sel [N, k] i32 in [0, E) or -1
Variable moe_gather_gates(const Variable& scores, const Tensor& sel, bool renormalize);

// MoE++ zero-computation experts. Routed expert ids [first_null, first_null + n_zero) are zero
// experts (output 0), the next n_copy are copy experts (output x), the next n_const are constant
// experts (output consts[c], a learned vector each):
//   y[n] = sum_j gates[n, j] * E_{sel[n, j]}(x[n]), other ids contribute nothing.
//   x [N, D], gates [N, k], sel [N, k] i32, consts [n_const, D] (null when n_const = 0)
Variable moe_null_experts(const Variable& x, const Variable& gates, const Tensor& sel, int64_t first_null,
                          int64_t n_zero, int64_t n_copy, int64_t n_const, const Variable* consts);

}  // namespace sw::ops
