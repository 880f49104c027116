// Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"; fla layers/linear_attn.py):
//
//   q, k, v = q_proj x, k_proj x, v_proj x                  per head: K = expand_k D / H, V = expand_v D / H
//   q, k    = phi(q), phi(k)                                 feature map: elu + 1 | identity | hedgehog
//   S_t     = S_{t-1} + k_t v_t^T,  o_t = S_t^T (q_t / sqrt(K'))      (no decay; K' = feature width)
//   o_t     = o_t / (q_t . sum_{j<=t} k_j / sqrt(K') + eps)  optional normaliser (a ones column on v)
//   out     = o_proj(rmsnorm_per_head(o))                    output norm: rmsnorm | identity
//
// Hedgehog (Zhang et al. 2024; fla HedgehogFeatureMap): a learnable map per head dim, identity at
// init, then a softmax over the 2K' channels [2 W x, -2 W x]; separate maps for q and k.
// The state is the [K', V (+1)] matrix per head: constant in the context length.
#pragma once

#include <string>

#include "nn/linear_attention/common.h"

namespace sw::nn {

struct LinearAttentionConfig {
  int64_t n_heads = 4;
  double expand_k = 1.0;
  double expand_v = 1.0;
  std::string feature_map = "elu";
  bool normalize = false;
  double normalizer_eps = 1e-6;
  std::string output_norm = "rmsnorm";
  double norm_eps = 1e-5;
  int64_t chunk_size = 32;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "heads");
    v("expand_k", expand_k, "query/key width = expand_k * d_model (split over heads)");
    v("expand_v", expand_v, "value width = expand_v * d_model (split over heads)");
    v("feature_map", feature_map, "feature map on q and k: elu (elu + 1), identity, or hedgehog (learned)");
    v("normalize", normalize, "divide by the running-sum normaliser q . sum k (needs a positive feature map)");
    v("normalizer_eps", normalizer_eps, "epsilon added to the normaliser's denominator");
    v("output_norm", output_norm, "per-head output norm: rmsnorm or identity");
    v("norm_eps", norm_eps, "RMSNorm epsilon of the output norm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise training kernel");
  }
};

// fla's HedgehogFeatureMap: phi(x) = softmax([2 W x + 2 b, -(2 W x + 2 b)]) over 2 K channels,
// W [K, K] shared by the heads, initialised to the identity.
class HedgehogFeatureMap : public Module {
 public:
  HedgehogFeatureMap(int64_t head_dim, std::mt19937_64& rng);
  Variable forward(const Variable& x);  // [B, T, H, K] -> [B, T, H, 2K]

 private:
  Linear* layer_;
};

class LinearAttention : public Mixer {
 public:
  LinearAttention(int64_t d_model, const LinearAttentionConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  Variable feature(const Variable& x, HedgehogFeatureMap* map) const;
  LinearAttentionConfig cfg_;
  int64_t d_model_, key_dim_, value_dim_, head_k_, head_v_, feat_k_;
  Linear *q_proj_, *k_proj_, *v_proj_, *o_proj_;
  HedgehogFeatureMap *fmap_q_ = nullptr, *fmap_k_ = nullptr;
  RMSNorm* norm_ = nullptr;
};

}  // namespace sw::nn
