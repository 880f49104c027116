// Lightning attention, the linear layer of MiniMax-01 (arXiv 2501.08313; HF transformers
// models/minimax `MiniMaxLightningAttention`), on the Lightning Attention-2 block kernel
// (kernels/linear/lightning_attention.h, research/methods.md 4.4):
//
//   q, k, v = silu(q_proj x), silu(k_proj x), silu(v_proj x)    H heads of head_dim d each
//   S_t     = lambda_h S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t       no 1/sqrt(d) scale (as MiniMax)
//             lambda_h = exp(-s_h),  s_h = base^(h+1) * (1 - l / (L - 1 + 1e-5) + 1e-5),
//             base = 2^(-8/H), l = layer index, L = number of layers (a fixed, ALiBi-like decay
//             per head that weakens with depth; not a parameter)
//   out     = out_proj( sigmoid(output_gate x) ⊙ RMSNorm(o) )    RMSNorm over the whole H*d hidden
//
// Deviations from the reference, none of which changes the function:
// - MiniMax has one qkv_proj whose output is split per head as [q_h, k_h, v_h]; here q, k and v have
//   one Linear each (a permutation of the same weight's rows; a converter splits it).
// - The slope factor is MiniMax's get_slope_rate literally: l / (L - 1 + 1e-5), which also covers
//   L == 1 (factor 1 + 1e-5). The paper's/methods.md form l / (L - 1) differs by ~1e-5 relative
//   except at the last layer, where MiniMax's factor is ~1e-5 (1 + 1/(L - 1)) instead of 1e-5.
// - Initialisation follows this project's convention (N(0, 0.02), output projection
//   0.02 / sqrt(2 L)); MiniMax's residual alpha/beta factors belong to the block, not the mixer.
// Training and prefill run the block kernel; one decode token without autograd takes the GLA
// family's in-place step (same recurrence). State: [H, d, d] per sequence.
#pragma once

#include "nn/linear_attention/common.h"

namespace sw::nn {

struct LightningConfig {
  int64_t n_heads = 4;
  int64_t head_dim = 0;
  int64_t block_size = 64;
  double norm_eps = 1e-6;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "lightning heads (head h decays by exp(-2^(-8(h+1)/H) * depth factor))");
    v("head_dim", head_dim, "width of q, k, v per head (0: d_model / n_heads)");
    v("block_size", block_size, "tokens per block of the Lightning-2 intra/inter kernel");
    v("norm_eps", norm_eps, "epsilon of the output RMSNorm (over all heads)");
  }
};

class LightningAttention : public Mixer {
 public:
  LightningAttention(int64_t d_model, const LightningConfig& cfg, const MixerSite& site, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

  // MiniMax's slope rates s_h for one layer (double; the layer stores -s_h as fp32 log decays).
  static std::vector<double> slope_rates(int64_t n_heads, int64_t layer_index, int64_t n_layers);
  const Tensor& log_decay() const { return log_decay_; }  // [H]: -s_h
  int64_t head_dim() const { return head_dim_; }
  const LightningConfig& config() const { return cfg_; }

 private:
  LightningConfig cfg_;
  int64_t d_model_, head_dim_, inner_;
  Tensor log_decay_;  // fixed, not a parameter
  Linear *q_proj_, *k_proj_, *v_proj_, *output_gate_, *out_proj_;
  RMSNorm* norm_;
};

}  // namespace sw::nn
