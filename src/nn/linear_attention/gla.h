// Gated Linear Attention (Yang et al. 2023, arXiv 2312.06635; fla layers/gla.py GatedLinearAttention):
//
//   q, k, v = q_proj x, k_proj x, v_proj x          K = expand_k D / H (fla 0.5), V = expand_v D / H (1)
//             (optional fla ShortConvolution + SiLU on each, off by default as in fla)
//   gk      = logsigmoid(gk_proj.1(gk_proj.0 x)) / gate_logit_normalizer      low rank 16, normaliser 16,
//             optionally clamped from below (clamp_min)                        one log decay per key channel
//   S_t     = diag(exp(gk_t)) S_{t-1} + k_t v_t^T,  o_t = S_t^T (q_t / sqrt(K))
//   out     = o_proj(rmsnorm_per_head(o) * swish(g_proj x))                    (fla FusedRMSNormGated)
//
// Training runs the chunkwise kernel in its per-channel gate mode; the state is [K, V] per head.
#pragma once

#include "nn/linear_attention/common.h"

namespace sw::nn {

struct GlaConfig {
  int64_t n_heads = 4;
  double expand_k = 0.5;
  double expand_v = 1.0;
  int64_t gate_low_rank_dim = 16;
  double gate_logit_normalizer = 16.0;
  double clamp_min = 0.0;  // 0: no clamp (log decays are <= 0, so a clamp is a negative number)
  bool use_output_gate = true;
  bool use_short_conv = false;
  int64_t conv_size = 4;
  bool conv_bias = false;
  double norm_eps = 1e-5;
  int64_t chunk_size = 32;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "heads");
    v("expand_k", expand_k, "query/key width = expand_k * d_model (split over heads)");
    v("expand_v", expand_v, "value width = expand_v * d_model (split over heads)");
    v("gate_low_rank_dim", gate_low_rank_dim, "rank of the decay-gate projection gk_proj");
    v("gate_logit_normalizer", gate_logit_normalizer, "logsigmoid(gate) is divided by this (slower decay)");
    v("clamp_min", clamp_min, "lower clamp of the log decay (negative; 0 = none)");
    v("use_output_gate", use_output_gate, "multiply the normed output by swish(g_proj x)");
    v("use_short_conv", use_short_conv, "causal depthwise conv + SiLU on q, k, v (fla ShortConvolution)");
    v("conv_size", conv_size, "width of the short convolutions");
    v("conv_bias", conv_bias, "bias in the short convolutions");
    v("norm_eps", norm_eps, "epsilon of the per-head output RMSNorm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise training kernel");
  }
};

class GatedLinearAttention : public Mixer {
 public:
  GatedLinearAttention(int64_t d_model, const GlaConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  GlaConfig cfg_;
  int64_t d_model_, key_dim_, value_dim_, head_k_, head_v_;
  Linear *q_proj_, *k_proj_, *v_proj_, *gk_proj0_, *gk_proj1_, *g_proj_ = nullptr, *o_proj_;
  la_detail::ShortConvolution *q_conv_ = nullptr, *k_conv_ = nullptr, *v_conv_ = nullptr;
  RMSNorm* g_norm_;
};

}  // namespace sw::nn
