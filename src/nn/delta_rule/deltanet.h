// DeltaNet mixer (Schlag et al. 2021; Yang et al. 2024, arXiv 2406.06484), as fla's
// layers/delta_net.py: q/k/v projections, each through a short depthwise causal conv (width 4) with
// SiLU, L2-normalised q and k per head, beta = sigmoid(b_proj x), the delta rule
//   S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t / sqrt(d_k),
// a per-head RMSNorm on o (gated by silu(g_proj x) when use_gate; fla's default is ungated) and o_proj.
// Training and prefill run the chunkwise (WY/UT) kernel; decode advances the state one token.
#pragma once

#include <string>

#include "nn/delta_rule/common.h"

namespace sw::nn {

struct DeltaNetConfig {
  int64_t n_heads = 4;
  double expand_k = 1.0;
  double expand_v = 1.0;
  bool use_beta = true;
  bool use_gate = false;
  bool use_short_conv = true;
  int64_t conv_size = 4;
  bool conv_bias = false;
  bool allow_neg_eigval = false;
  std::string qk_activation = "silu";
  double norm_eps = 1e-5;
  int64_t chunk_size = 64;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "heads (key and value widths are split evenly)");
    v("expand_k", expand_k, "key width / d_model");
    v("expand_v", expand_v, "value width / d_model");
    v("use_beta", use_beta, "data-dependent writing strength beta = sigmoid(b_proj x) (false: beta = 1)");
    v("use_gate", use_gate, "gate the output norm with silu(g_proj x)");
    v("use_short_conv", use_short_conv, "depthwise causal conv on q, k, v (fla: keep it on)");
    v("conv_size", conv_size, "short conv width");
    v("conv_bias", conv_bias, "bias in the short convs");
    v("allow_neg_eigval", allow_neg_eigval, "beta in (0, 2): negative eigenvalues of the transition");
    v("qk_activation", qk_activation, "activation of q and k before the L2 norm: silu, relu or identity");
    v("norm_eps", norm_eps, "epsilon of the output RMSNorm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise kernel");
  }
};

class DeltaNet : public Mixer {
 public:
  DeltaNet(int64_t d_model, const DeltaNetConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  DeltaNetConfig cfg_;
  int64_t d_model_, key_dim_, value_dim_, head_k_, head_v_;
  Linear *q_proj_, *k_proj_, *v_proj_, *b_proj_ = nullptr, *g_proj_ = nullptr, *o_proj_;
  ShortConvolution *q_conv_ = nullptr, *k_conv_ = nullptr, *v_conv_ = nullptr;
  RMSNorm* o_norm_;
};

}  // namespace sw::nn
