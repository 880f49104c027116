#include "nn/linear_attention/rwkv6.h"

#include <algorithm>
#include <cmath>

#include "ops/linear_attention_ops.h"
#include "ops/ops.h"

namespace sw::nn {
namespace {

// RWKV-LM's init schedules depend on the layer's depth ratio; a Mixer does not know its index, so
// they are taken at mid depth (see rwkv6.h).
constexpr double kRatio0To1 = 0.5, kRatio1ToAlmost0 = 0.5;

}  // namespace

Rwkv6::Rwkv6(int64_t d_model, const Rwkv6Config& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "rwkv6";
  key_dim_ = la_detail::expanded_width(d_model, cfg.expand_k, cfg.n_heads, op, "key width");
  value_dim_ = la_detail::expanded_width(d_model, cfg.expand_v, cfg.n_heads, op, "value width");
  head_k_ = key_dim_ / cfg.n_heads;
  head_v_ = value_dim_ / cfg.n_heads;
  SW_CHECK(cfg.proj_low_rank_dim > 0 && cfg.gate_low_rank_dim > 0, op,
           "proj_low_rank_dim and gate_low_rank_dim must be positive, got ", cfg.proj_low_rank_dim, " and ",
           cfg.gate_low_rank_dim);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  const int64_t D = d_model, R = cfg.proj_low_rank_dim, K = key_dim_;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);

  // Static token-shift mixes: mu for the LoRA input, x_bias[r, w, k, v, g] for the five branches.
  Tensor mu = Tensor::empty({D}), xb = Tensor::empty({5, D});
  for (int64_t i = 0; i < D; ++i) {
    const double ddd = static_cast<double>(i) / static_cast<double>(D);
    const double full = std::pow(ddd, kRatio1ToAlmost0), half = std::pow(ddd, 0.5 * kRatio1ToAlmost0);
    mu.data<float>()[i] = static_cast<float>(1.0 - full);
    const double mix[5] = {1.0 - half, 1.0 - full, 1.0 - full, 1.0 - (full + 0.3 * kRatio0To1), 1.0 - half};
    for (int n = 0; n < 5; ++n) xb.data<float>()[n * D + i] = static_cast<float>(mix[n]);
  }
  x_mu_ = &add_param("x_proj.0.mu", mu, false);
  x_proj0_ = add_module("x_proj.0.linear", std::make_unique<Linear>(D, 5 * R, false, std, rng));
  x_proj0_->weight().mutable_data().zero();
  x_proj2_ = add_module("x_proj.2", std::make_unique<Linear>(5 * R, D, false, std, rng));
  x_proj2_->weight().mutable_data() = init_uniform({D, 5 * R}, -0.01, 0.01, rng);
  x_bias_ = &add_param("x_bias", xb, false);

  r_proj_ = add_module("r_proj.linear", std::make_unique<Linear>(D, K, false, std, rng));
  w_lora0_ = add_module("w_proj.linear.lora.0", std::make_unique<Linear>(D, cfg.gate_low_rank_dim, false, std, rng));
  w_lora0_->weight().mutable_data().zero();
  w_lora2_ = add_module("w_proj.linear.lora.2", std::make_unique<Linear>(cfg.gate_low_rank_dim, K, true, std, rng));
  w_lora2_->weight().mutable_data() = init_uniform({K, cfg.gate_low_rank_dim}, -0.01, 0.01, rng);
  // Decay speeds spread over the key channels: w = -exp(w0) from -exp(-6) (memory ~400 tokens) to
  // -exp(-1) (~1.4 tokens), so the heads see several time scales from the first step.
  Tensor& w0 = w_lora2_->parameters().back()->var.mutable_data();  // the LoRA's output bias
  const double span = static_cast<double>(std::max<int64_t>(K - 1, 1));
  for (int64_t n = 0; n < K; ++n)
    w0.data<float>()[n] = static_cast<float>(-6.0 + 5.0 * std::pow(n / span, 0.7 + 1.3 * kRatio0To1));
  k_proj_ = add_module("k_proj.linear", std::make_unique<Linear>(D, K, false, std, rng));
  v_proj_ = add_module("v_proj.linear", std::make_unique<Linear>(D, value_dim_, false, std, rng));
  g_proj_ = add_module("g_proj.linear", std::make_unique<Linear>(D, value_dim_, false, std, rng));
  Tensor u = Tensor::empty({cfg.n_heads, head_k_});
  for (int64_t n = 0; n < K; ++n)
    u.data<float>()[n] = static_cast<float>(kRatio0To1 * (1.0 - n / span) + 0.1 * static_cast<double>((n + 1) % 3 - 1));
  bonus_ = &add_param("bonus", u, false);
  gn_w_ = &add_param("g_norm.weight", Tensor::full({value_dim_}, 1.0), false);
  gn_b_ = &add_param("g_norm.bias", Tensor::zeros({value_dim_}), false);
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(value_dim_, D, false, out_std, rng));
}

Variable Rwkv6::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "rwkv6", "input must be [B, T, ", d_model_,
           "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads, D = d_model_, R = cfg_.proj_low_rank_dim;
  auto* st = static_cast<LinearAttentionState*>(ctx.state);
  // Token shift: the previous token's x (zero before the first, or the state's last one).
  Variable prev(st ? st->tails[0] : Tensor::zeros({B, 1, D}));
  Variable shifted = T > 1 ? ops::concat({prev, ops::slice(x, 1, 0, T - 1)}, 1) : prev;
  if (st) st->tails[0] = x.data().slice(1, T - 1, T).contiguous().clone();
  Variable delta = ops::sub(shifted, x);
  // ddlerp: five data-dependent mixes from one LoRA (fla x_proj), plus their static parts x_bias.
  Variable m = la_detail::tanh(x_proj0_->forward(ops::add(x, ops::mul(delta, *x_mu_))));
  Variable w2 = x_proj2_->weight(), xb = la_detail::f32_param(*x_bias_);
  std::vector<Variable> ms = ops::split_last(m, std::vector<int64_t>(5, R));
  auto branch_input = [&](int n) {
    Variable mn = ops::linear(ms[n], ops::slice(w2, 1, n * R, (n + 1) * R), nullptr, matmul_dtype());
    mn = ops::add(mn, ops::slice(xb, 0, n, n + 1));
    return ops::add(x, ops::mul(delta, mn));
  };
  Variable r = ops::reshape(r_proj_->forward(branch_input(0)), {B, T, H, head_k_});
  Variable w = w_lora2_->forward(la_detail::tanh(w_lora0_->forward(branch_input(1))));
  w = ops::reshape(ops::scale(ops::exp(w), -1.0), {B, T, H, head_k_});  // log decay -exp(.) < 0
  Variable k = ops::reshape(k_proj_->forward(branch_input(2)), {B, T, H, head_k_});
  Variable v = ops::reshape(v_proj_->forward(branch_input(3)), {B, T, H, head_v_});
  Variable g = g_proj_->forward(branch_input(4));
  Variable u = la_detail::f32_param(*bonus_);
  Variable o = la_detail::recurrence(r, k, v, kernels::GlaGate::kChannel, &w, &u, st, 1.0, cfg_.chunk_size);
  // GroupNorm with one group per head: normalise each head's V channels, then the per-channel affine.
  o = ops::reshape(ops::layernorm(o, nullptr, nullptr, cfg_.norm_eps), {B, T, value_dim_});
  o = ops::add(ops::mul(o, *gn_w_), *gn_b_);
  return o_proj_->forward(ops::mul(o, ops::silu(g)));
}

std::unique_ptr<LayerState> Rwkv6::new_state(int64_t batch) const {
  auto s = std::make_unique<LinearAttentionState>();
  s->memory = Tensor::zeros({batch, cfg_.n_heads, head_k_, head_v_});
  s->tails.push_back(Tensor::zeros({batch, 1, d_model_}));
  return s;
}

int64_t Rwkv6::state_bytes(int64_t) const {
  return (cfg_.n_heads * head_k_ * head_v_ + d_model_) * static_cast<int64_t>(sizeof(float));
}

// Per head and token: the per-channel decay (K V), the rank-one update and the read-out (2 K V each),
// plus the bonus term (3 K + 2 V, small).
double Rwkv6::extra_flops_per_token(int64_t) const {
  return 5.0 * static_cast<double>(cfg_.n_heads * head_k_ * head_v_);
}

}  // namespace sw::nn
