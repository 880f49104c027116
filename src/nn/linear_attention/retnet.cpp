#include "nn/linear_attention/retnet.h"

#include <cmath>

#include "ops/ops.h"

namespace sw::nn {

MultiScaleRetention::MultiScaleRetention(int64_t d_model, const RetNetConfig& cfg, int64_t n_layers,
                                         std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "retnet";
  key_dim_ = la_detail::expanded_width(d_model, cfg.expand_k, cfg.n_heads, op, "key width");
  value_dim_ = la_detail::expanded_width(d_model, cfg.expand_v, cfg.n_heads, op, "value width");
  head_k_ = key_dim_ / cfg.n_heads;
  head_v_ = value_dim_ / cfg.n_heads;
  SW_CHECK(head_k_ % 2 == 0, op, "per-head key width ", head_k_, " must be even for RoPE");
  SW_CHECK(!cfg.use_short_conv || cfg.conv_size >= 2, op, "conv_size must be at least 2, got ", cfg.conv_size);
  SW_CHECK(cfg.rope_base > 1, op, "rope_base must be > 1, got ", cfg.rope_base);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  // gamma_h = 1 - 2^(-5-h) (paper, fla chunk_retention); log1p keeps the long-memory heads exact.
  log_gamma_ = Tensor::empty({cfg.n_heads});
  for (int64_t h = 0; h < cfg.n_heads; ++h)
    log_gamma_.data<float>()[h] = static_cast<float>(std::log1p(-std::exp2(-5.0 - static_cast<double>(h))));
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, value_dim_, false, std, rng));
  if (cfg.use_output_gate) g_proj_ = add_module("g_proj", std::make_unique<Linear>(d_model, value_dim_, false, std, rng));
  if (cfg.use_short_conv) {
    using la_detail::ShortConvolution;
    q_conv_ = add_module("q_conv1d", std::make_unique<ShortConvolution>(key_dim_, cfg.conv_size, cfg.conv_bias, true, std, rng));
    k_conv_ = add_module("k_conv1d", std::make_unique<ShortConvolution>(key_dim_, cfg.conv_size, cfg.conv_bias, true, std, rng));
    v_conv_ = add_module("v_conv1d", std::make_unique<ShortConvolution>(value_dim_, cfg.conv_size, cfg.conv_bias, true, std, rng));
  }
  g_norm_ = add_module("g_norm", std::make_unique<RMSNorm>(head_v_, cfg.norm_eps));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(value_dim_, d_model, false, out_std, rng));
}

Variable MultiScaleRetention::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "retnet", "input must be [B, T, ", d_model_,
           "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads;
  auto* st = static_cast<LinearAttentionState*>(ctx.state);
  auto branch = [&](Linear* proj, la_detail::ShortConvolution* conv, size_t tail) {
    Variable y = proj->forward(x);
    return conv ? conv->forward(y, st ? &st->tails[tail] : nullptr) : y;
  };
  Variable q = ops::reshape(branch(q_proj_, q_conv_, 0), {B, T, H, head_k_});
  Variable k = ops::reshape(branch(k_proj_, k_conv_, 1), {B, T, H, head_k_});
  Variable v = ops::reshape(branch(v_proj_, v_conv_, 2), {B, T, H, head_v_});
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(ctx.position + t);
  Tensor positions = Tensor::from_vector(pos, {T});
  q = ops::rope(q, positions, head_k_, cfg_.rope_base);
  k = ops::rope(k, positions, head_k_, cfg_.rope_base);
  Variable g(log_gamma_);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_k_));
  Variable o = la_detail::recurrence(q, k, v, kernels::GlaGate::kHeadConst, &g, nullptr, st, scale, cfg_.chunk_size);
  o = g_norm_->forward(o);
  if (g_proj_) o = ops::mul(o, ops::silu(ops::reshape(g_proj_->forward(x), {B, T, H, head_v_})));
  return o_proj_->forward(ops::reshape(o, {B, T, value_dim_}));
}

std::unique_ptr<LayerState> MultiScaleRetention::new_state(int64_t batch) const {
  auto s = std::make_unique<LinearAttentionState>();
  s->memory = Tensor::zeros({batch, cfg_.n_heads, head_k_, head_v_});
  if (cfg_.use_short_conv)
    for (int64_t c : {key_dim_, key_dim_, value_dim_}) s->tails.push_back(Tensor::zeros({batch, cfg_.conv_size - 1, c}));
  return s;
}

int64_t MultiScaleRetention::state_bytes(int64_t) const {
  int64_t floats = cfg_.n_heads * head_k_ * head_v_;
  if (cfg_.use_short_conv) floats += (cfg_.conv_size - 1) * (2 * key_dim_ + value_dim_);
  return floats * static_cast<int64_t>(sizeof(float));
}

// Per head and token: the decay (K V), the rank-one update and the read-out (2 K V each).
double MultiScaleRetention::extra_flops_per_token(int64_t) const {
  return 5.0 * static_cast<double>(cfg_.n_heads * head_k_ * head_v_);
}

}  // namespace sw::nn
