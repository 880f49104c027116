// TTT-Linear (Sun et al. 2024, "Learning to (Learn at Test Time)"), the inner loop of one layer:
// forward (dual form), backward, and a single-token decode step (primal form).
//
// Reference: ttt-lm-pytorch ttt.py, TTTLinear.ttt / compute_mini_batch (dual form), with the caller
// doing the projections, RoPE on xq/xk (positions mod the mini-batch), the learnable token scale and
// the lr gate. Per (batch, head) the inner model is f(x) = LN(x W + b), W [D, D], b [D], with
// LN(z) = gamma * (z - mean) / sqrt(var + eps) + beta (biased variance, per-head gamma/beta). Tokens
// go in mini-batches of `mini_batch` (16 by default; the last one may be shorter, as the reference
// runs the remainder as its own shorter mini-batch). In a mini-batch starting from (W, b), with
// positions i, j in it:
//   G_j    = d/dz [ 0.5 || LN(z) - (xv_j - xk_j) ||^2 ] at z = xk_j W + b   (gradient at the START weights)
//   eta_ij = token_eta[i] * eta_j        (eta: per key token, e.g. base_lr * sigmoid(x theta_h) / D)
//   out_i  = xq_i + LN( xq_i W + b - sum_{j<=i} eta_ij (xq_i . xk_j + 1) G_j )       (dual form)
//          = xq_i + LN( xq_i W_i + b_i ),  W_i = W - sum_{j<=i} eta_ij xk_j^T G_j,   (primal form)
//                                          b_i = b - sum_{j<=i} eta_ij G_j
//   the next mini-batch starts from (W_{m-1}, b_{m-1}), m its length.
// So token i's output uses the weights after the gradient steps of tokens 0..i of its own mini-batch
// (all taken at the mini-batch's start weights), scaled by token i's token_eta. The final state is
// (W_{m-1}, b_{m-1}) of the last mini-batch, partial or not; carrying it into another call equals one
// call over the concatenation only when the split falls on a mini-batch boundary (the reference also
// only continues from mini-batch boundaries). f64 primal version: kernels/ref/scan_ref.h.
//
// Layout: xq, xk, xv, out [B, T, H, D]; eta [B, T, H]; state W [B, H, D, D] (rows: input channels),
// b [B, H, D]. Parallel over (batch, head). The backward recomputes the forward from checkpoints of
// (W, b) every ~sqrt(T / mini_batch) mini-batches: O(sqrt(T) * D^2) extra memory per work item.
#pragma once

#include <cstdint>

namespace sw::kernels::scan {

struct TttLinearInputs {
  const float* xq = nullptr;         // [B, T, H, D]
  const float* xk = nullptr;         // [B, T, H, D]
  const float* xv = nullptr;         // [B, T, H, D]
  const float* eta = nullptr;        // [B, T, H] per-token inner learning rate (key side)
  const float* token_eta = nullptr;  // [mini_batch] per-position scale, or nullptr for 1 / (i + 1)
  const float* ln_gamma = nullptr;   // [H, D]
  const float* ln_beta = nullptr;    // [H, D]
  const float* W0 = nullptr;         // [B, H, D, D] initial inner weights
  const float* b0 = nullptr;         // [B, H, D] initial inner bias
  int64_t B = 0, T = 0, H = 0, D = 0;
  int64_t mini_batch = 16;
  float eps = 1e-6f;
};

// Gradient outputs, overwritten. Any pointer may be nullptr when not wanted.
struct TttLinearGrads {
  float* dxq = nullptr;        // [B, T, H, D]
  float* dxk = nullptr;        // [B, T, H, D]
  float* dxv = nullptr;        // [B, T, H, D]
  float* deta = nullptr;       // [B, T, H]
  float* dtoken_eta = nullptr; // [mini_batch]
  float* dln_gamma = nullptr;  // [H, D]
  float* dln_beta = nullptr;   // [H, D]
  float* dW0 = nullptr;        // [B, H, D, D]
  float* db0 = nullptr;        // [B, H, D]
};

// out: [B, T, H, D]; W_out [B, H, D, D] and b_out [B, H, D]: the final state, or nullptr.
void ttt_linear_fwd(const TttLinearInputs& in, float* out, float* W_out, float* b_out);

// dout: [B, T, H, D]; dW_out [B, H, D, D], db_out [B, H, D]: gradients arriving at the final state,
// or nullptr (zero).
void ttt_linear_bwd(const TttLinearInputs& in, const float* dout, const float* dW_out, const float* db_out,
                    const TttLinearGrads& grads);

// One decode token at position `pos` of its mini-batch (primal form, as the reference's decoding):
// G is taken at W, b (the weights at the mini-batch start); the accumulators gain eta * xk^T G and
// eta * G; the token is read out with W - token_eta * W_grad, b - token_eta * b_grad. When the token
// closes its mini-batch (pos == mini_batch - 1, the caller's flag) those become W, b and the
// accumulators are zeroed. Start a sequence with W, b = W0, b0 and zero accumulators.
void ttt_linear_step(const float* xq,        // [B, H, D]
                     const float* xk,        // [B, H, D]
                     const float* xv,        // [B, H, D]
                     const float* eta,       // [B, H]
                     float token_eta,        // token_eta[pos] (1 / (pos + 1) by default)
                     const float* ln_gamma,  // [H, D]
                     const float* ln_beta,   // [H, D]
                     float* W,               // [B, H, D, D] weights at the mini-batch start (updated)
                     float* b,               // [B, H, D]
                     float* W_grad,          // [B, H, D, D] accumulated eta-weighted gradient (updated)
                     float* b_grad,          // [B, H, D]
                     bool closes_mini_batch,
                     float* out,             // [B, H, D]
                     int64_t B, int64_t H, int64_t D, float eps = 1e-6f);

}  // namespace sw::kernels::scan
