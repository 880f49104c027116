// Multi-head Latent Attention (DeepSeek-V2): keys and values come from a low-rank latent c_kv
// (d_c per token) through per-head up-projections; RoPE is decoupled into a per-head query part and
// ONE rotary key shared by all heads. Training runs the materialised form (per-head K, V through the
// tiled kernel). With a state (prefill and decode) it runs the absorbed form: W_UK folds into the
// query and W_UV into the output, so the cache holds only [c_kv | k_rope], d_c + d_rope floats per
// token and layer.
#pragma once

#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

struct MlaConfig {
  int64_t n_heads = 4;
  int64_t q_lora_rank = 0;  // 0: queries straight from x (DeepSeek-V2-Lite); else a normed latent
  int64_t kv_lora_rank = 64;
  int64_t qk_nope_dim = 32;
  int64_t qk_rope_dim = 16;
  int64_t v_head_dim = 32;
  double rope_base = 10000.0;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "attention heads");
    v("q_lora_rank", q_lora_rank, "query latent width (0 = no query compression)");
    v("kv_lora_rank", kv_lora_rank, "KV latent width d_c (what the cache holds)");
    v("qk_nope_dim", qk_nope_dim, "per-head query/key width without RoPE");
    v("qk_rope_dim", qk_rope_dim, "per-head query / shared key width with RoPE");
    v("v_head_dim", v_head_dim, "per-head value width");
    v("rope_base", rope_base, "RoPE base frequency");
  }
};

// The latent cache: [B, capacity, d_c + d_rope] rows, growable.
class LatentCache : public LayerState {
 public:
  LatentCache(int64_t batch, int64_t width);
  void append(const Tensor& rows);  // [B, T, width]
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  const Tensor& rows() const { return rows_; }
  int64_t bytes() const override { return static_cast<int64_t>(rows_.nbytes()); }
  const char* kind() const override { return "mla-latent"; }

 private:
  int64_t batch_, width_, length_ = 0, capacity_ = 256;
  Tensor rows_;
};

class MultiHeadLatentAttention : public Mixer {
 public:
  MultiHeadLatentAttention(int64_t d_model, const MlaConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  Variable materialised(const Variable& q_nope, const Variable& q_rope, const Variable& c_kv, const Variable& k_rope);
  Tensor absorbed(const Tensor& q_nope, const Tensor& q_rope, LatentCache& cache, int64_t new_tokens);
  MlaConfig cfg_;
  Linear *wq_a_ = nullptr, *wq_b_ = nullptr, *wq_ = nullptr, *wkv_a_, *wkv_b_, *wo_;
  RMSNorm *q_norm_ = nullptr, *kv_norm_;
};

}  // namespace sw::nn
