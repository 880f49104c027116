// HGRN2 (Qin et al. 2024, arXiv 2404.07904; fla layers/hgrn2.py HGRN2Attention): a gated linear RNN
// whose state is expanded by an outer product, i.e. GLA with the input gate tied to the forget gate:
//
//   q, f, i = q_proj x, f_proj x, i_proj x     q, f: H * expand_ratio channels, i: D channels
//             (optional fla ShortConvolution without activation, off by default as in fla)
//   g       = logsigmoid(f)                    per-channel log forget gate, lower-bounded when
//             lower_bound > 0: g = log(lb + (1 - lb) sigmoid(f))
//   S_t     = diag(exp(g_t)) S_{t-1} + (1 - exp(g_t)) i_t^T,   o_t = S_t^T (swish(q_t) / sqrt(K))
//   out     = o_proj(rmsnorm(o) [* swish(g_proj x)])       norm over all D channels (fla g_norm)
//
// Heads: n_heads = d_model / expand_ratio (fla), key width per head expand_ratio, value width D / H.
// Deviation: fla's model learns one lower bound per layer and channel (a cumulative softmax over
// layers, zero for layer 0), which needs the layer index a Mixer does not get; here the bound is a
// fixed hyper-parameter (0 = fla's first layer). The output gate is an option (off, as in fla).
#pragma once

#include "nn/linear_attention/common.h"

namespace sw::nn {

struct Hgrn2Config {
  int64_t expand_ratio = 128;
  int64_t n_heads = 0;  // 0: d_model / expand_ratio
  double lower_bound = 0.0;
  bool use_output_gate = false;
  bool use_short_conv = false;
  int64_t conv_size = 4;
  bool conv_bias = false;
  double norm_eps = 1e-5;
  int64_t chunk_size = 32;

  template <class V>
  void visit(V& v) {
    v("expand_ratio", expand_ratio, "state expansion: key width per head (fla default 128)");
    v("n_heads", n_heads, "heads (0 = d_model / expand_ratio)");
    v("lower_bound", lower_bound, "lower bound of the forget gate in [0, 1) (fla learns one per layer)");
    v("use_output_gate", use_output_gate, "multiply the normed output by swish(g_proj x)");
    v("use_short_conv", use_short_conv, "causal depthwise conv on q, f, i (fla ShortConvolution)");
    v("conv_size", conv_size, "width of the short convolutions");
    v("conv_bias", conv_bias, "bias in the short convolutions");
    v("norm_eps", norm_eps, "epsilon of the output RMSNorm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise training kernel");
  }
};

class Hgrn2 : public Mixer {
 public:
  Hgrn2(int64_t d_model, const Hgrn2Config& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  Hgrn2Config cfg_;
  int64_t d_model_, n_heads_, forget_dim_, head_f_, head_i_;
  Linear *q_proj_, *f_proj_, *i_proj_, *g_proj_ = nullptr, *o_proj_;
  la_detail::ShortConvolution *q_conv_ = nullptr, *f_conv_ = nullptr, *i_conv_ = nullptr;
  RMSNorm* g_norm_;
};

}  // namespace sw::nn
