// Gated DeltaNet mixer (Yang, Kautz, Hatamizadeh 2024, arXiv 2412.06464), as fla's
// layers/gated_deltanet.py (the form Qwen3-Next uses): q/k/v projections through short convs with
// SiLU, L2-normalised q and k, beta = sigmoid(b_proj x), a Mamba2-style scalar decay per head
//   g_t = -exp(A_log) softplus(a_proj x_t + dt_bias)          (log space, <= 0)
//   S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t / sqrt(d_k),
// then a per-head RMSNorm gated by silu(g_proj x) and o_proj. Value heads may outnumber q/k heads
// (num_v_heads, GVA): value head j reads q/k head j / (num_v_heads / n_heads).
// Training and prefill run the chunkwise kernel; decode advances the state one token.
#pragma once

#include "nn/delta_rule/common.h"

namespace sw::nn {

struct GatedDeltaNetConfig {
  int64_t n_heads = 4;
  int64_t head_dim = 0;
  double expand_v = 2.0;
  int64_t num_v_heads = 0;
  bool use_gate = true;
  bool use_short_conv = true;
  int64_t conv_size = 4;
  bool conv_bias = false;
  bool allow_neg_eigval = false;
  double norm_eps = 1e-5;
  int64_t chunk_size = 64;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "query/key heads");
    v("head_dim", head_dim, "query/key width per head (0 = 0.75 d_model / n_heads, fla's 6 x 256 at 2048)");
    v("expand_v", expand_v, "value width per head / head_dim");
    v("num_v_heads", num_v_heads, "value heads (0 = n_heads; a multiple of n_heads: grouped value heads)");
    v("use_gate", use_gate, "gate the output norm with silu(g_proj x)");
    v("use_short_conv", use_short_conv, "depthwise causal conv on q, k, v (fla: keep it on)");
    v("conv_size", conv_size, "short conv width");
    v("conv_bias", conv_bias, "bias in the short convs");
    v("allow_neg_eigval", allow_neg_eigval, "beta in (0, 2): negative eigenvalues of the transition");
    v("norm_eps", norm_eps, "epsilon of the output RMSNorm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise kernel");
  }
};

class GatedDeltaNet : public Mixer {
 public:
  GatedDeltaNet(int64_t d_model, const GatedDeltaNetConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  GatedDeltaNetConfig cfg_;
  int64_t d_model_, n_v_heads_, head_k_, head_v_, key_dim_, value_dim_;
  Linear *q_proj_, *k_proj_, *v_proj_, *a_proj_, *b_proj_, *g_proj_ = nullptr, *o_proj_;
  Variable *A_log_, *dt_bias_;
  ShortConvolution *q_conv_ = nullptr, *k_conv_ = nullptr, *v_conv_ = nullptr;
  RMSNorm* o_norm_;
};

}  // namespace sw::nn
