// Differentiable ops over the scan kernels (kernels/scan): the Mamba1 selective scan, the HGRN
// element-wise gated recurrence and the TTT-Linear inner loop. Kept apart from ops.h so that only the
// scan layers see the kernels' types.
//
// Each sequence op runs the kernel's whole-sequence form (training and prefill), takes an optional
// initial state and, when asked, returns the final state as a second differentiable output (a
// gradient arriving there flows back through the recurrence, and into the initial state). The
// *_step functions are the decode path: one token, the state updated in place, nothing recorded.
#pragma once

#include "autograd/variable.h"
#include "kernels/scan/scan_form.h"

namespace sw::ops {

// The output of a scan op, and its final state (undefined unless final_state was requested).
struct ScanResult {
  Variable out;
  Variable final_state;
};

// ---- Mamba1 selective scan (kernels/scan/selective_scan.h) ----
//   dt_t = softplus(delta_t + delta_bias) (if delta_softplus), h_t = exp(dt_t A) h_{t-1} + dt_t Bm_t u_t,
//   out_t = (Cm_t . h_t + Dskip u_t) * silu(z_t)
// Optional inputs may be null: no skip, no gate, no bias, zero initial state.
ScanResult selective_scan(const Variable& u,           // [B, T, D]
                          const Variable& delta,       // [B, T, D] before bias and softplus
                          const Variable& A,           // [D, N] (negative)
                          const Variable& Bm,          // [B, T, N]
                          const Variable& Cm,          // [B, T, N]
                          const Variable* Dskip,       // [D] or null
                          const Variable* z,           // [B, T, D] or null
                          const Variable* delta_bias,  // [D] or null
                          const Variable* h0,          // [B, D, N] or null
                          bool delta_softplus, bool final_state,
                          kernels::scan::ScanForm form = kernels::scan::ScanForm::sequential);

// One decode token; h [B, D, N] is read and overwritten. Returns out [B, D].
Tensor selective_scan_step(const Tensor& u,           // [B, D]
                           const Tensor& delta,       // [B, D]
                           const Tensor& A,           // [D, N]
                           const Tensor& Bm,          // [B, N]
                           const Tensor& Cm,          // [B, N]
                           const Tensor* Dskip,       // [D] or null
                           const Tensor* z,           // [B, D] or null
                           const Tensor* delta_bias,  // [D] or null
                           bool delta_softplus, Tensor& h);

// ---- HGRN element-wise recurrence (kernels/scan/elementwise_scan.h) ----
//   h_t = exp(g_t) * h_{t-1} + x_t, out_t = h_t
ScanResult hgrn_scan(const Variable& x,   // [B, T, D]
                     const Variable& g,   // [B, T, D] log forget gate (<= 0)
                     const Variable* h0,  // [B, D] or null
                     bool final_state, kernels::scan::ScanForm form = kernels::scan::ScanForm::sequential);

// One decode token; h [B, D] is read and overwritten. Returns out [B, D] (= the new h).
Tensor hgrn_step(const Tensor& x,  // [B, D]
                 const Tensor& g,  // [B, D]
                 Tensor& h);

// ---- TTT-Linear inner loop, dual form (kernels/scan/ttt_linear.h) ----
// Mini-batches of mini_batch tokens start at token 0 of this call (the last may be shorter).
struct TttLinearResult {
  Variable out;  // [B, T, H, D] = xq + LN(xq W_i + b_i)
  Variable W;    // [B, H, D, D] inner weights after the last mini-batch (undefined unless final_state)
  Variable b;    // [B, H, D]
};
TttLinearResult ttt_linear(const Variable& xq,         // [B, T, H, D]
                           const Variable& xk,         // [B, T, H, D]
                           const Variable& xv,         // [B, T, H, D]
                           const Variable& eta,        // [B, T, H] per-token inner learning rate
                           const Variable* token_eta,  // [mini_batch] or null (1 / (i + 1))
                           const Variable& ln_gamma,   // [H, D] inner LayerNorm weight
                           const Variable& ln_beta,    // [H, D] inner LayerNorm bias
                           const Variable& W0,         // [H, D, D] shared by the batch, or [B, H, D, D]
                           const Variable& b0,         // [H, D] shared by the batch, or [B, H, D]
                           int64_t mini_batch, double eps, bool final_state);

// One decode token at position `pos` of its mini-batch (primal form). W, b: [B, H, D, D], [B, H, D],
// the weights at the mini-batch's start; W_grad, b_grad: the eta-weighted gradients accumulated over
// the mini-batch so far. All four are updated; when the token closes the mini-batch, W and b take the
// step and the accumulators are zeroed. Returns out [B, H, D].
Tensor ttt_linear_step(const Tensor& xq,        // [B, H, D]
                       const Tensor& xk,        // [B, H, D]
                       const Tensor& xv,        // [B, H, D]
                       const Tensor& eta,       // [B, H]
                       float token_eta,         // token_eta[pos]
                       const Tensor& ln_gamma,  // [H, D]
                       const Tensor& ln_beta,   // [H, D]
                       Tensor& W, Tensor& b, Tensor& W_grad, Tensor& b_grad, bool closes_mini_batch, double eps);

}  // namespace sw::ops
