// RWKV-7 "Goose" time mixing (Peng et al. 2025, arXiv 2503.14456), as fla's layers/rwkv7.py:
//   token shift: x_c = x + (x_{t-1} - x) * mu_c for c in r, w, k, v, a, g (learned per-channel lerp)
//   r = r_proj x_r;  k = k_proj x_k;  v = v_proj x_v
//   log decay w = -e^{-1/2} sigmoid(w_lora x_w)   (decay exp(w) in (0.545, 1))
//   in-context learning rate a = sigmoid(a_lora x_a);  output gate g = g_lora x_g (sigmoid inside)
//   kk = L2norm(k * k_k) per head;  k <- k (1 + (a - 1) k_a)
//   S_t = diag(exp(w_t)) S_{t-1} - (kk a)_t (kk_t^T S_{t-1}) + k_t v_t^T;  o_t = S_t^T r_t
//   (the DPLR kernel with a = -kk, b = kk * a, scale 1)
//   out = o_proj(((GroupNorm_heads(o) + (r . (k r_k)) v) * g)       (the "bonus" of the current token)
// Training and prefill run the chunkwise DPLR kernel (backward: recurrent BPTT); decode advances the
// state one token. The state is the matrix memory plus the previous token (for the token shift).
//
// Simplified against the reference (documented, not hidden):
// - No value residual ("v_first": layers > 0 lerp v toward layer 0's v with a sigmoid LoRA gate): a
//   mixer sees only its own input here, so every layer is built as RWKV-7's layer 0.
// - Layer-dependent initial values (token-shift mu, decay bias, GroupNorm scale) use the ratios of
//   the middle layer (layer n_layers / 2), since a mixer does not know its index.
// - Orthogonal initialisations are replaced by Gaussians of the same entry scale
//   (gain / sqrt(max(rows, cols))), and o_proj is N(0, 0.02 / sqrt(2 n_layers)) instead of zero, as
//   every residual branch of this engine.
// - The block's FFN is the engine's (SwiGLU), not RWKV's squared-ReLU channel mix.
#pragma once

#include "nn/delta_rule/common.h"

namespace sw::nn {

struct Rwkv7Config {
  int64_t head_dim = 64;
  int64_t decay_low_rank_dim = 0;
  int64_t a_low_rank_dim = 0;
  int64_t gate_low_rank_dim = 0;
  double norm_eps = 1e-5;
  int64_t chunk_size = 16;

  template <class V>
  void visit(V& v) {
    v("head_dim", head_dim, "key/value width per head (heads = d_model / head_dim)");
    v("decay_low_rank_dim", decay_low_rank_dim,
      "rank of the decay LoRA (0 = fla's max(32, round(2.5 sqrt(d) head_dim / 64 / 32) 32))");
    v("a_low_rank_dim", a_low_rank_dim, "rank of the in-context learning-rate LoRA (0 = as the decay's)");
    v("gate_low_rank_dim", gate_low_rank_dim, "rank of the output-gate LoRA (0 = max(32, round(5 sqrt(d) / 32) 32))");
    v("norm_eps", norm_eps, "GroupNorm epsilon per channel (times head_dim, as fla)");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise DPLR kernel");
  }
};

// Low-rank projection x -> act(x A) B (+ bias), fla's LoRA: A = lora.0 zero-initialised, B = lora.2.
class LoRA : public Module {
 public:
  enum class Act { none, tanh, sigmoid };
  LoRA(int64_t in, int64_t out, int64_t rank, Act act, bool bias, std::mt19937_64& rng);
  Variable forward(const Variable& x);
  void set_bias(const std::vector<float>& value);  // [out]

 private:
  Act act_;
  Linear *down_, *up_;
  Variable* bias_ = nullptr;
};

class Rwkv7 : public Mixer {
 public:
  Rwkv7(int64_t d_model, const Rwkv7Config& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  Rwkv7Config cfg_;
  int64_t d_model_, n_heads_;
  Variable *x_r_, *x_w_, *x_k_, *x_v_, *x_a_, *x_g_, *k_k_, *k_a_, *r_k_, *gn_w_, *gn_b_;
  Linear *r_proj_, *k_proj_, *v_proj_, *o_proj_;
  LoRA *w_lora_, *a_lora_, *g_lora_;
};

}  // namespace sw::nn
