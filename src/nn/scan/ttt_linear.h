// TTT-Linear mixer (Sun et al. 2024, "Learning to (Learn at Test Time)"), the ttt-lm-pytorch
// `TTTLinear` layer with its Transformer backbone (ttt.py):
//
//   XQ, XK, XV = q_proj(x), k_proj(x), v_proj(x)            n_heads x head_dim each
//   XQ, XK     = RoPE(positions mod mini_batch), on consecutive channel pairs as the reference does
//                (its permute_qk / undo_permute_qk around a rotate-half RoPE)
//   eta_j      = ttt_base_lr * sigmoid(x_j . learnable_ttt_lr_weight[h] + learnable_ttt_lr_bias[h]) / head_dim
//   token_eta  = max(0, 1 / (i + 1) + learnable_token_idx[i]),  i = position in the mini-batch
//   Z          = TTT inner loop (ops::ttt_linear): per head an inner model LN(x W1 + b1) with LayerNorm
//                ttt_norm_weight/bias, trained by one gradient step per mini-batch of 16 tokens on
//                0.5 || LN(XK W + b) - (XV - XK) ||^2; outputs XQ + LN(XQ W_i + b_i) (dual form)
//   out        = o_proj( post_norm(Z) [* gelu_tanh(g_proj(x)) if use_gate] )
//
// Inference state: the inner W, b at the start of the current mini-batch, the eta-weighted gradients
// accumulated over the tokens of that mini-batch so far (the reference's W1_grad / b1_grad), and the
// token count. Prefill runs the dual-form kernel over whole mini-batches and the kernel's primal
// decode step over tokens that start or end mid mini-batch (at most mini_batch - 1 at each end), so a
// prefill of any length continues exactly where the last one stopped. Those step-processed tokens are
// inference only (not differentiable): with gradient recording on, a stateful forward must stay on
// mini-batch boundaries.
//
// Not implemented from the reference: share_qk with the conv_q / conv_k short convs and pre_conv
// (the Mamba-backbone variant), and TTT-MLP.
#pragma once

#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

// RoPE over consecutive channel pairs (2i, 2i + 1) rotated by positions * base^(-2i / D), which is
// what the reference's permute_qk + rotate-half RoPE + undo_permute_qk computes. x [B, T, H, D],
// positions i32 [T].
Variable rope_consecutive_pairs(const Variable& x, const Tensor& positions, double base);

struct TttLinearConfig {
  int64_t n_heads = 4;
  int64_t head_dim = 0;  // 0: d_model / n_heads
  int64_t mini_batch = 16;
  double ttt_base_lr = 1.0;
  double rope_base = 10000.0;
  bool use_gate = false;
  double ttt_norm_eps = 1e-6;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "heads, each with its own inner linear model");
    v("head_dim", head_dim, "per-head width, inner model head_dim x head_dim (0 = d_model / n_heads)");
    v("mini_batch", mini_batch, "tokens per inner gradient step");
    v("ttt_base_lr", ttt_base_lr, "base inner learning rate (scaled by the learned sigmoid gate / head_dim)");
    v("rope_base", rope_base, "RoPE base frequency (positions taken modulo mini_batch)");
    v("use_gate", use_gate, "output gate gelu_tanh(g_proj(x)) as in the Mamba backbone");
    v("ttt_norm_eps", ttt_norm_eps, "epsilon of the inner LayerNorm");
  }
};

class TttLinearState : public LayerState {
 public:
  TttLinearState(int64_t batch, int64_t heads, int64_t head_dim);
  Tensor W, b;               // [B, H, D, D], [B, H, D] inner model at the start of the current mini-batch
  Tensor W_grad, b_grad;     // [B, H, D, D], [B, H, D] eta-weighted gradients of its tokens so far
  int64_t tokens = 0;        // tokens consumed; tokens % mini_batch is the position in the mini-batch
  bool initialised = false;  // W, b are copied from the layer's W1, b1 on first use
  int64_t bytes() const override;
  const char* kind() const override { return "recurrent"; }
};

class TttLinear : public Mixer {
 public:
  TttLinear(int64_t d_model, const TttLinearConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  Variable rope(const Variable& x, int64_t first_position) const;  // x [B, T, H, D], positions mod mini_batch
  Variable stateful(const Variable& xq, const Variable& xk, const Variable& xv, const Variable& eta,
                    const Variable& token_eta, TttLinearState& st);
  TttLinearConfig cfg_;
  int64_t d_model_, head_dim_;
  Linear *q_proj_, *k_proj_, *v_proj_, *o_proj_, *g_proj_ = nullptr;
  Variable *lr_w_, *lr_b_, *token_idx_, *norm_w_, *norm_b_, *W1_, *b1_, *post_w_, *post_b_;
  Tensor token_idx_base_;  // [mini_batch] 1 / (i + 1)
};

}  // namespace sw::nn
