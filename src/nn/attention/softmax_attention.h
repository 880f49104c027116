// Softmax attention mixer (Llama style): q/k/v projections, grouped-query heads (GQA/MQA), RoPE,
// optional sliding window with StreamingLLM sink tokens, optional learned per-head sink logits
// (gpt-oss). Training and prefill run the tiled kernel; decode runs split-KV attention over the
// KV cache.
#pragma once

#include <string>

#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

struct AttentionConfig {
  int64_t n_heads = 4;
  int64_t n_kv_heads = 0;  // 0: same as n_heads (MHA); 1: MQA; between: GQA
  int64_t head_dim = 0;    // 0: d_model / n_heads
  double rope_base = 10000.0;
  int64_t rotary_dim = 0;  // 0: the whole head (partial rotary below head_dim)
  int64_t window = 0;      // sliding window; 0 = full attention
  int64_t n_sink = 0;      // StreamingLLM sink tokens kept visible beside the window
  bool learned_sinks = false;
  std::string kv_dtype = "f32";  // KV cache storage: f32 | bf16 | int8 | int4 | int2 (KIVI)

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "query heads");
    v("n_kv_heads", n_kv_heads, "key/value heads (0 = n_heads; 1 = MQA)");
    v("head_dim", head_dim, "per-head dimension (0 = d_model / n_heads)");
    v("rope_base", rope_base, "RoPE base frequency");
    v("rotary_dim", rotary_dim, "channels rotated per head (0 = all)");
    v("window", window, "sliding-window length (0 = full attention)");
    v("n_sink", n_sink, "sink tokens always visible (StreamingLLM)");
    v("learned_sinks", learned_sinks, "per-head learned sink logits (gpt-oss)");
    v("kv_dtype", kv_dtype, "KV cache storage: f32, bf16, or int8/int4/int2 (KIVI)");
  }
};

class SoftmaxAttention : public Mixer {
 public:
  SoftmaxAttention(int64_t d_model, const AttentionConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  AttentionConfig cfg_;
  int64_t d_model_, n_kv_, head_dim_, rotary_dim_;
  Linear *wq_, *wk_, *wv_, *wo_;
  Variable* sinks_ = nullptr;
};

}  // namespace sw::nn
