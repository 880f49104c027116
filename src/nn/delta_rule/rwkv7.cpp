#include "nn/delta_rule/rwkv7.h"

#include <algorithm>
#include <cmath>

#include "ops/delta_rule_ops.h"
#include "ops/ops.h"

namespace sw::nn {

// ---------------------------------------------------------------------------------------------------
LoRA::LoRA(int64_t in, int64_t out, int64_t rank, Act act, bool bias, std::mt19937_64& rng) : act_(act) {
  SW_CHECK(in > 0 && out > 0 && rank > 0, "lora", "dimensions must be positive, got ", in, " -> ", rank, " -> ", out);
  // fla: lora.0 zero; lora.2 orthogonal with gain 0.1 (times sqrt(rank / out) when rank > out), here a
  // Gaussian with the same entry scale.
  down_ = add_module("lora.0", std::make_unique<Linear>(in, rank, false, 0.0, rng));
  down_->weight().mutable_data().zero();
  const double gain = 0.1 * (rank > out ? std::sqrt(static_cast<double>(rank) / out) : 1.0);
  up_ = add_module("lora.2", std::make_unique<Linear>(rank, out, false,
                                                      gain / std::sqrt(static_cast<double>(std::max(rank, out))), rng));
  if (bias) bias_ = &add_param("lora.2.bias", Tensor::zeros({out}), false);
}

Variable LoRA::forward(const Variable& x) {
  Variable h = down_->forward(x);
  if (act_ == Act::tanh) h = tanh_op(h);
  if (act_ == Act::sigmoid) h = ops::sigmoid(h);
  Variable y = up_->forward(h);
  return bias_ ? ops::add(y, *bias_) : y;
}

void LoRA::set_bias(const std::vector<float>& value) {
  SW_CHECK(bias_ && static_cast<int64_t>(value.size()) == bias_->numel(), "lora", "bias of ",
           bias_ ? bias_->numel() : 0, " values, got ", value.size());
  bias_->mutable_data().copy_from(Tensor::from_vector(value, {bias_->numel()}));
}

// ---------------------------------------------------------------------------------------------------
namespace {

// fla's default LoRA ranks: round(scale * sqrt(d_model) / 32) * 32, at least 32 (Python rounds half
// to even, as nearbyint does under the default rounding mode).
int64_t default_rank(double scale, int64_t d_model) {
  return std::max<int64_t>(32, static_cast<int64_t>(std::nearbyint(scale * std::sqrt(double(d_model)) / 32)) * 32);
}

constexpr double kLogDecayScale = -0.6065306597126334;  // -exp(-1/2): decay exp(w) in (e^{-e^{-1/2}}, 1)

}  // namespace

Rwkv7::Rwkv7(int64_t d_model, const Rwkv7Config& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "rwkv7";
  SW_CHECK(cfg.head_dim >= 2 && d_model % cfg.head_dim == 0, op, "head_dim ", cfg.head_dim,
           " must be at least 2 and divide d_model ", d_model);
  SW_CHECK(cfg.decay_low_rank_dim >= 0 && cfg.a_low_rank_dim >= 0 && cfg.gate_low_rank_dim >= 0, op,
           "low-rank dims must be >= 0 (0 = default)");
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  const int64_t D = d_model, hd = cfg.head_dim;
  n_heads_ = D / hd;
  const double factor = hd / 64.0;
  const int64_t decay_rank = cfg.decay_low_rank_dim ? cfg.decay_low_rank_dim : default_rank(2.5 * factor, D);
  const int64_t a_rank = cfg.a_low_rank_dim ? cfg.a_low_rank_dim : default_rank(2.5 * factor, D);
  const int64_t gate_rank = cfg.gate_low_rank_dim ? cfg.gate_low_rank_dim : default_rank(5.0, D);

  // Reference initial values (fla RWKV7Attention._initialize_weights) at the middle layer.
  const int64_t layer = n_layers / 2;
  const double r01 = n_layers > 1 ? double(layer) / double(n_layers - 1) : 0.0;  // 0 .. 1 over depth
  const double r10 = 1.0 - double(layer) / double(n_layers);                     // 1 .. ~0 over depth
  std::vector<float> mu_r(D), mu_w(D), mu_k(D), mu_v(D), mu_a(D), mu_g(D), kk_init(D), w_bias(D), a_bias(D);
  for (int64_t n = 0; n < D; ++n) {
    const double ddd = double(n) / double(D);
    const double linear = double(n) / double(D - 1) - 0.5;
    double zigzag = (double(n % hd) - (hd - 1) / 2.0) / ((hd - 1) / 2.0);
    zigzag *= std::fabs(zigzag);
    const double www = -6.0 + 6.0 * std::pow(double(n) / double(D - 1), 1.0 + std::pow(r01, 0.3));
    mu_r[n] = float(1.0 - std::pow(ddd, 0.2 * r10));
    mu_w[n] = float(1.0 - std::pow(ddd, 0.9 * r10));
    mu_k[n] = float(1.0 - std::pow(ddd, 0.7 * r10));
    mu_v[n] = float(1.0 - std::pow(ddd, 0.7 * r10));
    mu_a[n] = float(1.0 - std::pow(ddd, 0.9 * r10));
    mu_g[n] = float(1.0 - std::pow(ddd, 0.2 * r10));
    kk_init[n] = float(0.71 - linear * 0.1);
    w_bias[n] = float(www + 0.5 + zigzag * 2.5);  // 0.5: the softplus offset of RWKV-LM's parametrisation
    a_bias[n] = float(-0.19 + zigzag * 0.3 + linear * 0.4);
  }
  auto vec = [&](const std::vector<float>& v) { return Tensor::from_vector(v, {D}); };
  // Per-channel mixing coefficients and scales: not weight-decayed (RWKV-LM decays only matrices).
  x_r_ = &add_param("x_r", vec(mu_r), false);
  x_w_ = &add_param("x_w", vec(mu_w), false);
  x_k_ = &add_param("x_k", vec(mu_k), false);
  x_v_ = &add_param("x_v", vec(mu_v), false);
  x_a_ = &add_param("x_a", vec(mu_a), false);
  x_g_ = &add_param("x_g", vec(mu_g), false);
  k_k_ = &add_param("k_k", vec(kk_init), false);
  k_a_ = &add_param("k_a", Tensor::full({D}, 1.02), false);
  r_k_ = &add_param("r_k", Tensor::full({n_heads_, hd}, -0.04), false);
  // Orthogonal init in fla (gains 1, 0.1, 1): Gaussians with entry scale gain / sqrt(D) here.
  const double unit = 1.0 / std::sqrt(double(D));
  r_proj_ = add_module("r_proj", std::make_unique<Linear>(D, D, false, unit, rng));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(D, D, false, 0.1 * unit, rng));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(D, D, false, unit, rng));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(D, D, false, 0.02 / std::sqrt(2.0 * n_layers), rng));
  w_lora_ = add_module("w_lora", std::make_unique<LoRA>(D, D, decay_rank, LoRA::Act::tanh, true, rng));
  a_lora_ = add_module("a_lora", std::make_unique<LoRA>(D, D, a_rank, LoRA::Act::none, true, rng));
  g_lora_ = add_module("g_lora", std::make_unique<LoRA>(D, D, gate_rank, LoRA::Act::sigmoid, false, rng));
  w_lora_->set_bias(w_bias);
  a_lora_->set_bias(a_bias);
  gn_w_ = &add_param("g_norm.weight", Tensor::full({D}, std::pow(double(layer + 1) / double(n_layers), 0.7)), false);
  gn_b_ = &add_param("g_norm.bias", Tensor::zeros({D}), false);
}

Variable Rwkv7::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "rwkv7", "input must be [B, T, ", d_model_,
           "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), D = d_model_, H = n_heads_, hd = cfg_.head_dim;
  auto* st = static_cast<DeltaRuleState*>(ctx.state);
  // Token shift: the previous token's input (zero before the first; the state's tail when continuing).
  Variable prev(st ? st->tails[0] : Tensor::zeros({B, 1, D}));
  Variable shifted = T > 1 ? ops::concat({prev, ops::slice(x, 1, 0, T - 1)}, 1) : prev;
  if (st) st->tails[0] = x.data().slice(1, T - 1, T).clone();  // a copy: keeps no view of the whole prompt
  Variable delta = ops::sub(shifted, x);
  auto mix = [&](const Variable* mu) { return ops::add(x, ops::mul(delta, *mu)); };
  Variable r = r_proj_->forward(mix(x_r_));
  Variable w = ops::scale(ops::sigmoid(w_lora_->forward(mix(x_w_))), kLogDecayScale);
  Variable k = k_proj_->forward(mix(x_k_));
  Variable v = v_proj_->forward(mix(x_v_));
  Variable a = ops::sigmoid(a_lora_->forward(mix(x_a_)));
  Variable g = g_lora_->forward(mix(x_g_));
  const Shape heads = {B, T, H, hd};
  Variable kk = ops::l2norm(ops::reshape(ops::mul(k, *k_k_), heads), 1e-6);          // fla's fused l2_norm
  k = ops::mul(k, ops::add_scalar(ops::mul(ops::add_scalar(a, -1.0), *k_a_), 1.0));  // k (1 + (a - 1) k_a)
  r = ops::reshape(r, heads);
  w = ops::reshape(w, heads);
  k = ops::reshape(k, heads);
  v = ops::reshape(v, heads);
  a = ops::reshape(a, heads);
  Variable dplr_a = ops::scale(kk, -1.0), dplr_b = ops::mul(kk, a);
  Variable o;
  if (decode_step(ctx, T)) {
    o = Variable(ops::dplr_delta_rule_step(r.data(), w.data(), k.data(), v.data(), dplr_a.data(), dplr_b.data(),
                                           st->memory, 1.0));
  } else {
    Variable h0 = st ? Variable(st->memory) : Variable();
    ops::RecurrentOutput res =
        ops::dplr_delta_rule(r, w, k, v, dplr_a, dplr_b, st ? &h0 : nullptr, 1.0, cfg_.chunk_size);
    if (st) st->memory = res.state.data();  // a fresh tensor: h0, which the op may have saved, stays intact
    o = res.o;
  }
  // GroupNorm with one group per head (eps scaled by head_dim as fla), per-channel affine.
  o = ops::layernorm(o, nullptr, nullptr, static_cast<double>(hd) * cfg_.norm_eps);
  o = ops::add(ops::mul(o, ops::reshape(*gn_w_, {H, hd})), ops::reshape(*gn_b_, {H, hd}));
  // Bonus of the current token: (r . (k * r_k)) v per head.
  Variable rkr = ops::reshape(ops::sum(ops::mul(ops::mul(r, k), *r_k_), 3), {B, T, H, 1});
  o = ops::mul(ops::add(o, ops::mul(rkr, v)), ops::reshape(g, heads));
  return o_proj_->forward(ops::reshape(o, {B, T, D}));
}

std::unique_ptr<LayerState> Rwkv7::new_state(int64_t batch) const {
  auto s = std::make_unique<DeltaRuleState>();
  s->memory = Tensor::zeros({batch, n_heads_, cfg_.head_dim, cfg_.head_dim});
  s->tails.push_back(Tensor::zeros({batch, 1, d_model_}));
  return s;
}

int64_t Rwkv7::state_bytes(int64_t) const {
  return (n_heads_ * cfg_.head_dim * cfg_.head_dim + d_model_) * static_cast<int64_t>(sizeof(float));
}

// Per head and token: the decay (K V), a^T S and its rank-one write (2 K V each), k v^T (2 K V) and the
// read-out (2 K V).
double Rwkv7::extra_flops_per_token(int64_t) const { return 9.0 * n_heads_ * cfg_.head_dim * cfg_.head_dim; }

}  // namespace sw::nn
