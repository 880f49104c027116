// RWKV-6 "Finch" time mixing (Peng et al. 2024, arXiv 2404.05892; fla layers/rwkv6.py RWKV6Attention,
// BlinkDL RWKV-LM RWKV_Tmix_x060):
//
//   delta   = x_{t-1} - x_t                                 token shift (x_{-1} = 0, or the state's last x)
//   m       = tanh((x + delta * mu) W1)                       W1: D -> 5 R     (x_proj.0, ddlerp LoRA)
//   m_n     = m[n] W2_n + x_bias[n],  n in r, w, k, v, g      W2: 5 R -> D     (x_proj.2)
//   r, k, v, g = proj_n(x + delta * m_n)                       r, k: K = expand_k D, v, g: V = expand_v D
//   w       = -exp(w_proj(x + delta * m_w))                    LoRA D -> 64 -> K with bias: log decay
//   o_t     = S_{t-1}^T r_t + (r_t . (u ⊙ k_t)) v_t,  S_t = diag(exp(w_t)) S_{t-1} + k_t v_t^T   (scale 1)
//   out     = o_proj(groupnorm_per_head(o) * swish(g))
//
// The recurrence is the kernel's per-channel gate with the RWKV-6 read-out (bonus u [H, K]). The
// inference state is [K, V] per head plus the previous token's x.
// Simplifications (documented): the layout and names are fla's (ddlerp through one LoRA, static
// mixes folded into x_bias); projections use the engine's N(0, 0.02) instead of fla's xavier init;
// the per-layer init schedules of RWKV-LM (decay speed, bonus, static mixes) need the layer index,
// which a Mixer does not get, so they are taken at mid depth (layer ratio 0.5): decay bias
// w0[n] = -6 + 5 (n / (K-1))^(0.7 + 1.3 * 0.5) per key channel (memories from ~1 to ~400 tokens),
// bonus u[n] = 0.5 (1 - n / (K-1)) + 0.1 ((n + 1) % 3 - 1), static mixes 1 - (i / D)^0.5 (r, g:
// ^0.25; v: minus 0.15). LoRA first layers start at zero and second layers at U(+-0.01) (RWKV-LM).
#pragma once

#include "nn/linear_attention/common.h"

namespace sw::nn {

struct Rwkv6Config {
  int64_t n_heads = 4;
  double expand_k = 0.5;
  double expand_v = 1.0;
  int64_t proj_low_rank_dim = 32;
  int64_t gate_low_rank_dim = 64;
  double norm_eps = 1e-5;
  int64_t chunk_size = 32;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "heads");
    v("expand_k", expand_k, "receptance/key width = expand_k * d_model (split over heads)");
    v("expand_v", expand_v, "value/gate width = expand_v * d_model (split over heads)");
    v("proj_low_rank_dim", proj_low_rank_dim, "rank R of the data-dependent token-shift LoRA (x5)");
    v("gate_low_rank_dim", gate_low_rank_dim, "rank of the decay LoRA w_proj");
    v("norm_eps", norm_eps, "epsilon of the per-head group norm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise training kernel");
  }
};

class Rwkv6 : public Mixer {
 public:
  Rwkv6(int64_t d_model, const Rwkv6Config& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  Rwkv6Config cfg_;
  int64_t d_model_, key_dim_, value_dim_, head_k_, head_v_;
  Variable *x_mu_, *x_bias_, *bonus_, *gn_w_, *gn_b_;
  Linear *x_proj0_, *x_proj2_, *r_proj_, *w_lora0_, *w_lora2_, *k_proj_, *v_proj_, *g_proj_, *o_proj_;
};

}  // namespace sw::nn
