// Softmax attention mixer (Llama style): q/k/v projections, grouped-query heads (GQA/MQA), RoPE
// (or none: Jamba's attention layers have no positional encoding), optional sliding window with
// StreamingLLM sink tokens, optional learned per-head sink logits (gpt-oss), optional per-head
// RMSNorm of q and k (Qwen3), optional output gate o * sigmoid(W_g x) per head and channel before
// the output projection (Qwen3-Next's gated attention), an optional static block-sparse pattern
// (nn/attention/block_layout.h: band/global/strided blocks, Longformer, BigBird, LongNet dilated,
// Sparse Transformer strided and fixed) or MoBA's dynamic top-k block selection (nn/attention/moba.h).
// Training and prefill run the tiled kernel (or, with impl "sage"
// and no gradient, the int8-QK^T SageAttention kernel); decode runs split-KV attention over the KV
// cache (with a block-sparse pattern or MoBA: the tiled kernel over the cached keys, one row per query).
// RoPE reads MixerContext::positions when given (a Mixture-of-Depths block's routed tokens keep
// their original positions; then the attention must be full, without window or sparse pattern).
#pragma once

#include <string>

#include "nn/attention/block_layout.h"
#include "nn/attention/kv_policy.h"
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
  bool rope = true;
  bool qk_norm = false;
  bool output_gate = false;
  std::string impl = "flash";  // prefill kernel: flash | sage (inference only)
  int64_t sparse_block = 0;    // static block-sparse pattern (0 = dense), see block_layout.h
  int64_t sparse_local = 1;
  int64_t sparse_global = 0;
  int64_t sparse_stride = 0;
  std::string sparse_pattern = "blocks";  // blocks | longformer | bigbird | dilated | strided | fixed
  int64_t sparse_random = 0;              // bigbird: random key blocks per query block
  int64_t sparse_summary = 1;             // fixed: summary blocks per group
  int64_t sparse_seed = 0;                // bigbird: random table seed (mixed with the layer index)
  std::string sparse_segments;            // dilated: segment lengths in blocks, "4,16"
  std::string sparse_dilations;           // dilated: dilation rates in blocks, "1,4"
  int64_t moba_block = 0;                 // MoBA block size in tokens (0 = off)
  int64_t moba_topk = 3;                  // MoBA: key blocks per query, its own included
  bool causal = true;  // false: bidirectional (every token sees every token; no incremental decode)
  KvPolicyConfig kv;   // training-free KV-cache policy at inference (kv_policy.h); weights unchanged

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
    v("rope", rope, "rotary position embedding on q and k (false: no positional encoding, Jamba)");
    v("qk_norm", qk_norm, "RMSNorm over each head of q and k before RoPE (Qwen3)");
    v("output_gate", output_gate, "o * sigmoid(W_g x) per head before the output projection (Qwen3-Next)");
    v("impl", impl,
      "prefill kernel: flash (fp32 tiled) or sage (int8 QK^T; inference only: with gradients, flash runs)");
    v("sparse_block", sparse_block, "block size of a static block-sparse pattern (0 = dense)");
    v("sparse_local", sparse_local, "key blocks of the diagonal band, the query's own included");
    v("sparse_global", sparse_global, "leading key blocks visible to every query");
    v("sparse_stride", sparse_stride,
      "blocks: also every stride-th key block back (0 = none); strided/fixed: the period l in blocks");
    v("sparse_pattern", sparse_pattern,
      "static pattern over blocks of sparse_block tokens: blocks (band + global + stride), longformer (band + global "
      "rows and columns), bigbird (band + global + sparse_random random blocks), dilated (LongNet), strided or fixed "
      "(Sparse Transformer)");
    v("sparse_random", sparse_random, "bigbird: random key blocks per query block (fixed per layer and head)");
    v("sparse_summary", sparse_summary, "fixed: summary blocks at the end of every group of sparse_stride blocks");
    v("sparse_seed", sparse_seed, "bigbird: seed of the random block table (mixed with the layer index)");
    v("sparse_segments", sparse_segments, "dilated: comma-separated segment lengths in blocks, e.g. \"4,16\"");
    v("sparse_dilations", sparse_dilations, "dilated: comma-separated dilation rates in blocks, one per segment");
    v("moba_block", moba_block, "MoBA block size in tokens (0 = off): top-k key blocks per query by q . mean key");
    v("moba_topk", moba_topk, "MoBA: key blocks each query attends, its own (causal) block included");
    v("causal", causal,
      "true: a token sees itself and earlier tokens; false: bidirectional (masked diffusion LMs, encoders), no KV-cache "
      "decode");
    kv.visit(v);
  }
};

class SoftmaxAttention : public Mixer {
 public:
  SoftmaxAttention(int64_t d_model, const AttentionConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  // With the block's site: the layer index seeds BigBird's random blocks (the registry uses this one).
  SoftmaxAttention(int64_t d_model, const AttentionConfig& cfg, const MixerSite& site, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;
  bool causal() const override { return cfg_.causal; }

 private:
  Variable attend(const Variable& q, const Variable& k, const Variable& v, const MixerContext& ctx);

  AttentionConfig cfg_;
  SparsePattern pattern_;
  int64_t d_model_, n_kv_, head_dim_, rotary_dim_;
  Linear *wq_, *wk_, *wv_, *wo_, *wg_ = nullptr;
  RMSNorm *q_norm_ = nullptr, *k_norm_ = nullptr;
  Variable* sinks_ = nullptr;
};

}  // namespace sw::nn
