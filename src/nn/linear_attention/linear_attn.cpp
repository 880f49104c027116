#include "nn/linear_attention/linear_attn.h"

#include <cmath>

#include "ops/linear_attention_ops.h"
#include "ops/ops.h"

namespace sw::nn {


HedgehogFeatureMap::HedgehogFeatureMap(int64_t head_dim, std::mt19937_64& rng) {
  layer_ = add_module("layer", std::make_unique<Linear>(head_dim, head_dim, true, 0.02, rng));
  // Identity at init (fla): phi starts as softmax([2x, -2x]), a smooth positive map of the raw features.
  Tensor& w = layer_->weight().mutable_data();
  w.zero();
  for (int64_t i = 0; i < head_dim; ++i) w.data<float>()[i * head_dim + i] = 1.f;
}

Variable HedgehogFeatureMap::forward(const Variable& x) {
  Variable y = layer_->forward(x);
  return ops::softmax(ops::concat({ops::scale(y, 2.0), ops::scale(y, -2.0)}, 3));
}

LinearAttention::LinearAttention(int64_t d_model, const LinearAttentionConfig& cfg, int64_t n_layers,
                                 std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "linear_attn";
  key_dim_ = la_detail::expanded_width(d_model, cfg.expand_k, cfg.n_heads, op, "key width");
  value_dim_ = la_detail::expanded_width(d_model, cfg.expand_v, cfg.n_heads, op, "value width");
  head_k_ = key_dim_ / cfg.n_heads;
  head_v_ = value_dim_ / cfg.n_heads;
  SW_CHECK(cfg.feature_map == "elu" || cfg.feature_map == "identity" || cfg.feature_map == "hedgehog", op,
           "feature_map must be elu, identity or hedgehog, got '", cfg.feature_map, "'");
  // The normaliser divides by q . sum k: only a positive feature map keeps it away from zero.
  SW_CHECK(!cfg.normalize || cfg.feature_map != "identity", op,
           "normalize needs a positive feature map (elu or hedgehog), not identity");
  SW_CHECK(cfg.normalizer_eps >= 0, op, "normalizer_eps must be non-negative, got ", cfg.normalizer_eps);
  SW_CHECK(cfg.output_norm == "rmsnorm" || cfg.output_norm == "identity", op,
           "output_norm must be rmsnorm or identity, got '", cfg.output_norm, "'");
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  feat_k_ = cfg.feature_map == "hedgehog" ? 2 * head_k_ : head_k_;
  // fla: N(0, 0.02) for every Linear; o_proj scaled by 1/sqrt(2 n_layers) (prenorm residual rescale).
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, value_dim_, false, std, rng));
  if (cfg.feature_map == "hedgehog") {
    fmap_q_ = add_module("feature_map_q", std::make_unique<HedgehogFeatureMap>(head_k_, rng));
    fmap_k_ = add_module("feature_map_k", std::make_unique<HedgehogFeatureMap>(head_k_, rng));
  }
  if (cfg.output_norm == "rmsnorm") norm_ = add_module("norm", std::make_unique<RMSNorm>(head_v_, cfg.norm_eps));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(value_dim_, d_model, false, out_std, rng));
}

Variable LinearAttention::feature(const Variable& x, HedgehogFeatureMap* map) const {
  if (map) return map->forward(x);
  if (cfg_.feature_map == "elu") return la_detail::elu_plus_one(x);
  return x;
}

Variable LinearAttention::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "linear_attn", "input must be [B, T, ",
           d_model_, "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads;
  auto* st = static_cast<LinearAttentionState*>(ctx.state);
  Variable q = feature(ops::reshape(q_proj_->forward(x), {B, T, H, head_k_}), fmap_q_);
  Variable k = feature(ops::reshape(k_proj_->forward(x), {B, T, H, head_k_}), fmap_k_);
  Variable v = ops::reshape(v_proj_->forward(x), {B, T, H, head_v_});
  // The normaliser rides along as one more value channel of ones: its read-out is q . sum k.
  if (cfg_.normalize) v = ops::concat({v, Variable(Tensor::full({B, T, H, 1}, 1.0))}, 3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(feat_k_));
  Variable o = la_detail::recurrence(q, k, v, kernels::GlaGate::kNone, nullptr, nullptr, st, scale, cfg_.chunk_size);
  if (cfg_.normalize) o = ops::linear_attention_normalize(o, cfg_.normalizer_eps);
  if (norm_) o = norm_->forward(o);
  return o_proj_->forward(ops::reshape(o, {B, T, value_dim_}));
}

std::unique_ptr<LayerState> LinearAttention::new_state(int64_t batch) const {
  auto s = std::make_unique<LinearAttentionState>();
  s->memory = Tensor::zeros({batch, cfg_.n_heads, feat_k_, head_v_ + (cfg_.normalize ? 1 : 0)});
  return s;
}

int64_t LinearAttention::state_bytes(int64_t) const {
  return cfg_.n_heads * feat_k_ * (head_v_ + (cfg_.normalize ? 1 : 0)) * static_cast<int64_t>(sizeof(float));
}

// Per head and token: the rank-one update and the read-out, 2 K' V each.
double LinearAttention::extra_flops_per_token(int64_t) const {
  return 4.0 * static_cast<double>(cfg_.n_heads * feat_k_ * (head_v_ + (cfg_.normalize ? 1 : 0)));
}

}  // namespace sw::nn
