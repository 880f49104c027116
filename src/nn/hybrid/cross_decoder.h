// YOCO (You Only Cache Once; Sun et al. 2024, arXiv 2405.05254): a decoder-decoder. The first
// layers (the self-decoder) are efficient mixers with constant-size state (sliding-window attention,
// gated retention, ...); at the boundary ONE key/value pair is computed from the self-decoder's
// output,
//   K = RoPE(RMSNorm(x) W_K),  V = RMSNorm(x) W_V           (CrossKvProducer, once per model)
// and every later layer (the cross-decoder) attends over it with its own queries:
//   o = W_O attention(RoPE(x W_Q), K, V)                    (CrossDecoderAttention, causal)
// so a model of L layers caches one layer's KV instead of L/2. The model (models/language_model)
// builds the producer before the first block whose mixer reads_cross_kv() and hands the result to
// the cross-decoders through MixerContext::cross_kv; at inference the producer appends to the one
// shared cache (ModelState::cross_kv) and the cross-decoders keep no state of their own.
#pragma once

#include <string>

#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

class AttentionCache;

struct CrossDecoderConfig {
  int64_t n_heads = 4;
  int64_t n_kv_heads = 0;  // 0: n_heads
  int64_t head_dim = 0;    // 0: d_model / n_heads
  double rope_base = 10000.0;
  std::string kv_dtype = "f32";  // the shared cache: f32 | bf16

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "query heads");
    v("n_kv_heads", n_kv_heads, "heads of the shared key/value (0 = n_heads)");
    v("head_dim", head_dim, "per-head dimension (0 = d_model / n_heads)");
    v("rope_base", rope_base, "RoPE base frequency on queries and the shared keys");
    v("kv_dtype", kv_dtype, "storage of the one shared KV cache: f32 or bf16");
  }
  int64_t kv_heads() const { return n_kv_heads ? n_kv_heads : n_heads; }
  int64_t resolved_head_dim(int64_t d_model) const { return head_dim ? head_dim : d_model / n_heads; }
};

// What the producer hands to the cross-decoders for the tokens of this call.
struct CrossKv {
  Variable k, v;                   // [B, T, Hkv, D] of this call's tokens (k rotated)
  AttentionCache* cache = nullptr;  // inference: every token so far, these included
};

class CrossKvProducer : public Module {
 public:
  CrossKvProducer(int64_t d_model, const CrossDecoderConfig& cfg, double norm_eps, std::mt19937_64& rng);
  // x [B, T, D] at absolute position `position`; with a cache, the keys/values are appended to it.
  CrossKv produce(const Variable& x, int64_t position, LayerState* cache);
  std::unique_ptr<LayerState> new_state(int64_t batch) const;
  int64_t state_bytes(int64_t context) const;
  const CrossDecoderConfig& config() const { return cfg_; }

 private:
  CrossDecoderConfig cfg_;
  int64_t head_dim_;
  RMSNorm* norm_;
  Linear *wk_, *wv_;
};

class CrossDecoderAttention : public Mixer {
 public:
  CrossDecoderAttention(int64_t d_model, const CrossDecoderConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t) const override { return std::make_unique<NoState>(); }
  int64_t state_bytes(int64_t) const override { return 0; }  // the shared cache is the model's
  double extra_flops_per_token(int64_t context) const override;
  bool reads_cross_kv() const override { return true; }
  const CrossDecoderConfig& config() const { return cfg_; }

 private:
  CrossDecoderConfig cfg_;
  int64_t head_dim_;
  Linear *wq_, *wo_;
};

}  // namespace sw::nn
