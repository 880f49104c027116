#include "nn/linear_attention/gla.h"

#include <cmath>

#include "ops/ops.h"

namespace sw::nn {

GatedLinearAttention::GatedLinearAttention(int64_t d_model, const GlaConfig& cfg, int64_t n_layers,
                                           std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "gla";
  key_dim_ = la_detail::expanded_width(d_model, cfg.expand_k, cfg.n_heads, op, "key width");
  value_dim_ = la_detail::expanded_width(d_model, cfg.expand_v, cfg.n_heads, op, "value width");
  head_k_ = key_dim_ / cfg.n_heads;
  head_v_ = value_dim_ / cfg.n_heads;
  SW_CHECK(cfg.gate_low_rank_dim > 0, op, "gate_low_rank_dim must be positive, got ", cfg.gate_low_rank_dim);
  SW_CHECK(cfg.gate_logit_normalizer > 0, op, "gate_logit_normalizer must be positive, got ",
           cfg.gate_logit_normalizer);
  SW_CHECK(cfg.clamp_min <= 0, op, "clamp_min bounds a log decay (<= 0) from below: it must be negative (or 0 for "
           "none), got ", cfg.clamp_min);
  SW_CHECK(!cfg.use_short_conv || cfg.conv_size >= 2, op, "conv_size must be at least 2, got ", cfg.conv_size);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
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
  // fla: nn.Sequential(Linear(D, r, bias=False), Linear(r, K, bias=True)); the bias starts at zero,
  // so logsigmoid(0) / 16 = -0.043: every channel starts with a slow decay (~23-token memory).
  gk_proj0_ = add_module("gk_proj.0", std::make_unique<Linear>(d_model, cfg.gate_low_rank_dim, false, std, rng));
  gk_proj1_ = add_module("gk_proj.1", std::make_unique<Linear>(cfg.gate_low_rank_dim, key_dim_, true, std, rng));
  g_norm_ = add_module("g_norm", std::make_unique<RMSNorm>(head_v_, cfg.norm_eps));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(value_dim_, d_model, false, out_std, rng));
}

Variable GatedLinearAttention::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "gla", "input must be [B, T, ", d_model_,
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
  Variable gk = ops::scale(la_detail::logsigmoid(gk_proj1_->forward(gk_proj0_->forward(x))),
                           1.0 / cfg_.gate_logit_normalizer);
  if (cfg_.clamp_min < 0) gk = la_detail::clamp_min(gk, cfg_.clamp_min);
  gk = ops::reshape(gk, {B, T, H, head_k_});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_k_));
  Variable o = la_detail::recurrence(q, k, v, kernels::GlaGate::kChannel, &gk, nullptr, st, scale, cfg_.chunk_size);
  o = g_norm_->forward(o);
  if (g_proj_) o = ops::mul(o, ops::silu(ops::reshape(g_proj_->forward(x), {B, T, H, head_v_})));
  return o_proj_->forward(ops::reshape(o, {B, T, value_dim_}));
}

std::unique_ptr<LayerState> GatedLinearAttention::new_state(int64_t batch) const {
  auto s = std::make_unique<LinearAttentionState>();
  s->memory = Tensor::zeros({batch, cfg_.n_heads, head_k_, head_v_});
  if (cfg_.use_short_conv)
    for (int64_t c : {key_dim_, key_dim_, value_dim_}) s->tails.push_back(Tensor::zeros({batch, cfg_.conv_size - 1, c}));
  return s;
}

int64_t GatedLinearAttention::state_bytes(int64_t) const {
  int64_t floats = cfg_.n_heads * head_k_ * head_v_;
  if (cfg_.use_short_conv) floats += (cfg_.conv_size - 1) * (2 * key_dim_ + value_dim_);
  return floats * static_cast<int64_t>(sizeof(float));
}

// Per head and token: the per-channel decay (K V), the rank-one update and the read-out (2 K V each).
double GatedLinearAttention::extra_flops_per_token(int64_t) const {
  return 5.0 * static_cast<double>(cfg_.n_heads * head_k_ * head_v_);
}

}  // namespace sw::nn
