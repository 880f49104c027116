#include "nn/linear_attention/hgrn2.h"

#include <cmath>

#include "ops/ops.h"

namespace sw::nn {

Hgrn2::Hgrn2(int64_t d_model, const Hgrn2Config& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "hgrn2";
  SW_CHECK(cfg.expand_ratio > 0, op, "expand_ratio must be positive, got ", cfg.expand_ratio);
  n_heads_ = cfg.n_heads ? cfg.n_heads : d_model / cfg.expand_ratio;
  SW_CHECK(n_heads_ > 0 && d_model % n_heads_ == 0, op, "n_heads ", n_heads_, " (from n_heads ", cfg.n_heads,
           ", d_model ", d_model, " / expand_ratio ", cfg.expand_ratio, ") must be positive and divide d_model");
  SW_CHECK(cfg.lower_bound >= 0 && cfg.lower_bound < 1, op, "lower_bound must be in [0, 1), got ", cfg.lower_bound);
  SW_CHECK(!cfg.use_short_conv || cfg.conv_size >= 2, op, "conv_size must be at least 2, got ", cfg.conv_size);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  head_f_ = cfg.expand_ratio;
  forget_dim_ = n_heads_ * head_f_;
  head_i_ = d_model / n_heads_;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, forget_dim_, false, std, rng));
  f_proj_ = add_module("f_proj", std::make_unique<Linear>(d_model, forget_dim_, false, std, rng));
  i_proj_ = add_module("i_proj", std::make_unique<Linear>(d_model, d_model, false, std, rng));
  if (cfg.use_short_conv) {
    using la_detail::ShortConvolution;
    q_conv_ = add_module("q_conv1d", std::make_unique<ShortConvolution>(forget_dim_, cfg.conv_size, cfg.conv_bias, false, std, rng));
    f_conv_ = add_module("f_conv1d", std::make_unique<ShortConvolution>(forget_dim_, cfg.conv_size, cfg.conv_bias, false, std, rng));
    i_conv_ = add_module("i_conv1d", std::make_unique<ShortConvolution>(d_model, cfg.conv_size, cfg.conv_bias, false, std, rng));
  }
  if (cfg.use_output_gate) g_proj_ = add_module("g_proj", std::make_unique<Linear>(d_model, d_model, false, std, rng));
  g_norm_ = add_module("g_norm", std::make_unique<RMSNorm>(d_model, cfg.norm_eps));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(d_model, d_model, false, out_std, rng));
}

Variable Hgrn2::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "hgrn2", "input must be [B, T, ", d_model_,
           "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), H = n_heads_;
  auto* st = static_cast<LinearAttentionState*>(ctx.state);
  auto branch = [&](Linear* proj, la_detail::ShortConvolution* conv, size_t tail) {
    Variable y = proj->forward(x);
    return conv ? conv->forward(y, st ? &st->tails[tail] : nullptr) : y;
  };
  Variable q = ops::silu(branch(q_proj_, q_conv_, 0));
  Variable f = branch(f_proj_, f_conv_, 1);
  Variable i = branch(i_proj_, i_conv_, 2);
  // log forget gate; with a bound lb: log(lb + (1 - lb) sigmoid(f)) >= log lb (fla's logaddexp form).
  const double lb = cfg_.lower_bound;
  Variable g = lb > 0 ? ops::log(ops::add_scalar(ops::scale(ops::sigmoid(f), 1.0 - lb), lb)) : la_detail::logsigmoid(f);
  Variable k = ops::add_scalar(ops::scale(ops::exp(g), -1.0), 1.0);  // input gate tied: 1 - forget
  q = ops::reshape(q, {B, T, H, head_f_});
  k = ops::reshape(k, {B, T, H, head_f_});
  g = ops::reshape(g, {B, T, H, head_f_});
  Variable v = ops::reshape(i, {B, T, H, head_i_});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_f_));
  Variable o = la_detail::recurrence(q, k, v, kernels::GlaGate::kChannel, &g, nullptr, st, scale, cfg_.chunk_size);
  o = g_norm_->forward(ops::reshape(o, {B, T, d_model_}));
  if (g_proj_) o = ops::mul(o, ops::silu(g_proj_->forward(x)));
  return o_proj_->forward(o);
}

std::unique_ptr<LayerState> Hgrn2::new_state(int64_t batch) const {
  auto s = std::make_unique<LinearAttentionState>();
  s->memory = Tensor::zeros({batch, n_heads_, head_f_, head_i_});
  if (cfg_.use_short_conv)
    for (int64_t c : {forget_dim_, forget_dim_, d_model_})
      s->tails.push_back(Tensor::zeros({batch, cfg_.conv_size - 1, c}));
  return s;
}

int64_t Hgrn2::state_bytes(int64_t) const {
  int64_t floats = n_heads_ * head_f_ * head_i_;
  if (cfg_.use_short_conv) floats += (cfg_.conv_size - 1) * (2 * forget_dim_ + d_model_);
  return floats * static_cast<int64_t>(sizeof(float));
}

// Per head and token: the per-channel decay (K V), the rank-one update and the read-out (2 K V each).
double Hgrn2::extra_flops_per_token(int64_t) const {
  return 5.0 * static_cast<double>(n_heads_ * head_f_ * head_i_);
}

}  // namespace sw::nn
