#include "nn/linear_attention/mamba2.h"

#include <algorithm>
#include <cmath>

#include "ops/linear_attention_ops.h"
#include "ops/ops.h"

namespace sw::nn {

Mamba2::Mamba2(int64_t d_model, const Mamba2Config& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "mamba2";
  SW_CHECK(cfg.d_state > 0 && cfg.expand > 0 && cfg.headdim > 0 && cfg.ngroups > 0, op,
           "d_state, expand, headdim and ngroups must be positive, got ", cfg.d_state, ", ", cfg.expand, ", ",
           cfg.headdim, ", ", cfg.ngroups);
  SW_CHECK(cfg.d_conv >= 2, op, "d_conv must be at least 2, got ", cfg.d_conv);
  d_inner_ = cfg.expand * d_model;
  SW_CHECK(d_inner_ % cfg.headdim == 0, op, "d_inner ", d_inner_, " (expand ", cfg.expand, " x d_model ", d_model,
           ") must be a multiple of headdim ", cfg.headdim);
  n_heads_ = d_inner_ / cfg.headdim;
  SW_CHECK(n_heads_ % cfg.ngroups == 0, op, "heads ", n_heads_, " must be a multiple of ngroups ", cfg.ngroups);
  SW_CHECK(cfg.A_init_min > 0 && cfg.A_init_max >= cfg.A_init_min, op, "need 0 < A_init_min <= A_init_max, got ",
           cfg.A_init_min, " and ", cfg.A_init_max);
  SW_CHECK(cfg.dt_min > 0 && cfg.dt_max >= cfg.dt_min && cfg.dt_init_floor > 0, op,
           "need 0 < dt_min <= dt_max and dt_init_floor > 0, got dt_min ", cfg.dt_min, ", dt_max ", cfg.dt_max,
           ", dt_init_floor ", cfg.dt_init_floor);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  const int64_t E = d_inner_, H = n_heads_, GN = cfg.ngroups * cfg.d_state;
  conv_dim_ = E + 2 * GN;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  in_proj_ = add_module("in_proj", std::make_unique<Linear>(d_model, 2 * E + 2 * GN + H, cfg.bias, std, rng));
  conv1d_ = add_module("conv1d", std::make_unique<la_detail::ShortConvolution>(conv_dim_, cfg.d_conv, cfg.conv_bias,
                                                                              true, 0.0, rng));
  // dt_bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max] and floored, so the initial step
  // sizes span two decades; A ~ U(A_init_min, A_init_max) stored as log (mamba2.py). Neither decays.
  Tensor dt_bias = init_uniform({H}, 0.0, 1.0, rng), a_log = init_uniform({H}, cfg.A_init_min, cfg.A_init_max, rng);
  float* pd = dt_bias.data<float>();
  float* pa = a_log.data<float>();
  const double lo = std::log(cfg.dt_min), hi = std::log(cfg.dt_max);
  for (int64_t h = 0; h < H; ++h) {
    const double dt = std::max(std::exp(lo + (hi - lo) * pd[h]), cfg.dt_init_floor);
    pd[h] = static_cast<float>(dt + std::log(-std::expm1(-dt)));
    pa[h] = static_cast<float>(std::log(static_cast<double>(pa[h])));
  }
  dt_bias_ = &add_param("dt_bias", dt_bias, false);
  A_log_ = &add_param("A_log", a_log, false);
  D_ = &add_param("D", Tensor::full({H}, 1.0), false);
  norm_w_ = &add_param("norm.weight", Tensor::full({E}, 1.0), false);
  out_proj_ = add_module("out_proj", std::make_unique<Linear>(E, d_model, cfg.bias, out_std, rng));
}

Variable Mamba2::forward(const Variable& u, const MixerContext& ctx) {
  SW_CHECK(u.defined() && u.data().ndim() == 3 && u.dim(2) == d_model_, "mamba2", "input must be [B, T, ", d_model_,
           "], got ", u.defined() ? u.data().describe() : std::string("undefined"));
  const int64_t B = u.dim(0), T = u.dim(1), E = d_inner_, H = n_heads_, P = cfg_.headdim, N = cfg_.d_state;
  const int64_t G = cfg_.ngroups, GN = G * N;
  auto* st = static_cast<LinearAttentionState*>(ctx.state);
  std::vector<Variable> zxbcdt = ops::split_last(in_proj_->forward(u), {E, conv_dim_, H});
  const Variable& z = zxbcdt[0];
  Variable xbc = conv1d_->forward(zxbcdt[1], st ? &st->tails[0] : nullptr);
  Variable dt = ops::softplus(ops::add(zxbcdt[2], *dt_bias_));  // [B, T, H]
  std::vector<Variable> xBC = ops::split_last(xbc, {E, GN, GN});
  Variable x = ops::reshape(xBC[0], {B, T, H, P});
  Variable Bm = ops::repeat_heads(ops::reshape(xBC[1], {B, T, G, N}), H / G);
  Variable Cm = ops::repeat_heads(ops::reshape(xBC[2], {B, T, G, N}), H / G);
  Variable g = ops::mul(dt, ops::scale(ops::exp(*A_log_), -1.0));  // log decay dt A, A = -exp(A_log) < 0
  Variable v = ops::mul(x, ops::reshape(dt, {B, T, H, 1}));       // discretised input dt x
  Variable y = la_detail::recurrence(Cm, Bm, v, kernels::GlaGate::kScalar, &g, nullptr, st, 1.0, cfg_.chunk_size);
  y = ops::add(y, ops::mul(x, ops::reshape(*D_, {H, 1})));  // D skip on the un-discretised x
  y = ops::mul(ops::reshape(y, {B, T, E}), ops::silu(z));
  // Gated RMSNorm over groups of d_inner / ngroups channels (RMSNormGated, group_size = d_ssm / ngroups).
  if (G == 1) {
    y = ops::rmsnorm(y, norm_w_, cfg_.norm_eps);
  } else {
    y = ops::reshape(ops::rmsnorm(ops::reshape(y, {B, T, G, E / G}), nullptr, cfg_.norm_eps), {B, T, E});
    y = ops::mul(y, *norm_w_);
  }
  return out_proj_->forward(y);
}

std::unique_ptr<LayerState> Mamba2::new_state(int64_t batch) const {
  auto s = std::make_unique<LinearAttentionState>();
  s->memory = Tensor::zeros({batch, n_heads_, cfg_.d_state, cfg_.headdim});
  s->tails.push_back(Tensor::zeros({batch, cfg_.d_conv - 1, conv_dim_}));
  return s;
}

int64_t Mamba2::state_bytes(int64_t) const {
  return (n_heads_ * cfg_.d_state * cfg_.headdim + (cfg_.d_conv - 1) * conv_dim_) * static_cast<int64_t>(sizeof(float));
}

// Per head and token: the scalar decay (N P), the rank-one update and the read-out (2 N P each); per
// channel of xBC the depthwise conv (2 d_conv).
double Mamba2::extra_flops_per_token(int64_t) const {
  return 5.0 * static_cast<double>(n_heads_ * cfg_.d_state * cfg_.headdim) +
         2.0 * static_cast<double>(conv_dim_ * cfg_.d_conv);
}

}  // namespace sw::nn
