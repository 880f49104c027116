// RetNet multi-scale retention (Sun et al. 2023, arXiv 2307.08621; fla layers/multiscale_retention.py):
//
//   q, k, v = q_proj x, k_proj x, v_proj x       K = expand_k D / H, V = expand_v D / H (fla: 1 and 2)
//             (optional fla ShortConvolution + SiLU on each, off by default as in fla)
//   q, k    = RoPE(q), RoPE(k)                    rotate-half, base 10000, absolute positions (fla's
//                                                 RotaryEmbedding stands in for the paper's xPos)
//   S_t     = gamma_h S_{t-1} + k_t v_t^T,  o_t = S_t^T (q_t / sqrt(K))
//             gamma_h = 1 - 2^(-5 - h), a fixed per-head decay (the kernel's per-head constant gate,
//             g = log gamma_h), so head h remembers ~2^(5 + h) tokens
//   out     = o_proj(rmsnorm_per_head(o) * swish(g_proj x))   (fla FusedRMSNormGated; the paper's
//             GroupNorm is RMSNorm per head in fla)
//
// Training runs the chunkwise kernel; the state is [K, V] per head plus the conv tails.
#pragma once

#include "nn/linear_attention/common.h"

namespace sw::nn {

struct RetNetConfig {
  int64_t n_heads = 8;
  double expand_k = 1.0;
  double expand_v = 2.0;
  bool use_output_gate = true;
  bool use_short_conv = false;
  int64_t conv_size = 4;
  bool conv_bias = false;
  double rope_base = 10000.0;
  double norm_eps = 1e-5;
  int64_t chunk_size = 32;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "retention heads (head h decays by 1 - 2^(-5-h))");
    v("expand_k", expand_k, "query/key width = expand_k * d_model (split over heads)");
    v("expand_v", expand_v, "value width = expand_v * d_model (split over heads)");
    v("use_output_gate", use_output_gate, "multiply the normed output by swish(g_proj x)");
    v("use_short_conv", use_short_conv, "causal depthwise conv + SiLU on q, k, v (fla ShortConvolution)");
    v("conv_size", conv_size, "width of the short convolutions");
    v("conv_bias", conv_bias, "bias in the short convolutions");
    v("rope_base", rope_base, "RoPE base frequency on q and k");
    v("norm_eps", norm_eps, "epsilon of the per-head output RMSNorm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise training kernel");
  }
};

class MultiScaleRetention : public Mixer {
 public:
  MultiScaleRetention(int64_t d_model, const RetNetConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;
  const Tensor& log_decay() const { return log_gamma_; }  // [H]: log(1 - 2^(-5-h))

 private:
  RetNetConfig cfg_;
  int64_t d_model_, key_dim_, value_dim_, head_k_, head_v_;
  Tensor log_gamma_;  // fixed, not a parameter
  Linear *q_proj_, *k_proj_, *v_proj_, *g_proj_ = nullptr, *o_proj_;
  la_detail::ShortConvolution *q_conv_ = nullptr, *k_conv_ = nullptr, *v_conv_ = nullptr;
  RMSNorm* g_norm_;
};

}  // namespace sw::nn
