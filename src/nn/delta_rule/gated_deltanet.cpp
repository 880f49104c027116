#include "nn/delta_rule/gated_deltanet.h"

#include <algorithm>
#include <cmath>

#include "ops/delta_rule_ops.h"
#include "ops/ops.h"

namespace sw::nn {

GatedDeltaNet::GatedDeltaNet(int64_t d_model, const GatedDeltaNetConfig& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "gated_deltanet";
  SW_CHECK(cfg.n_heads > 0, op, "n_heads must be positive, got ", cfg.n_heads);
  if (cfg.head_dim > 0) {
    head_k_ = cfg.head_dim;
  } else {
    SW_CHECK(3 * d_model % (4 * cfg.n_heads) == 0, op, "head_dim 0 means 0.75 d_model / n_heads, but 0.75 * ", d_model,
             " is not a multiple of n_heads ", cfg.n_heads, "; set head_dim");
    head_k_ = 3 * d_model / (4 * cfg.n_heads);
  }
  n_v_heads_ = cfg.num_v_heads ? cfg.num_v_heads : cfg.n_heads;
  SW_CHECK(n_v_heads_ >= cfg.n_heads && n_v_heads_ % cfg.n_heads == 0, op, "num_v_heads ", n_v_heads_,
           " must be a multiple of n_heads ", cfg.n_heads);
  const double hv = head_k_ * cfg.expand_v;
  head_v_ = static_cast<int64_t>(std::llround(hv));
  SW_CHECK(head_v_ > 0 && std::fabs(hv - static_cast<double>(head_v_)) < 1e-6, op, "head_dim ", head_k_, " x expand_v ",
           cfg.expand_v, " must be a positive integer");
  SW_CHECK(!cfg.use_short_conv || cfg.conv_size >= 2, op, "conv_size must be at least 2, got ", cfg.conv_size);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  key_dim_ = cfg.n_heads * head_k_;
  value_dim_ = n_v_heads_ * head_v_;
  // fla: N(0, 0.02) for every Linear and Conv1d; o_proj scaled by 1/sqrt(2 n_layers) as every
  // residual branch of this engine.
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, value_dim_, false, std, rng));
  a_proj_ = add_module("a_proj", std::make_unique<Linear>(d_model, n_v_heads_, false, std, rng));
  b_proj_ = add_module("b_proj", std::make_unique<Linear>(d_model, n_v_heads_, false, std, rng));
  // Decay rate A ~ U(0, 16), stored as log (Mamba2); dt ~ logU(1e-3, 1e-1) floored at 1e-4, stored through
  // the inverse softplus so that softplus(dt_bias) = dt at init. Neither is weight-decayed.
  Tensor a_log = init_uniform({n_v_heads_}, 0.0, 16.0, rng), dt_bias = init_uniform({n_v_heads_}, 0.0, 1.0, rng);
  float* pa = a_log.data<float>();
  float* pd = dt_bias.data<float>();
  const double lo = std::log(1e-3), hi = std::log(1e-1);
  for (int64_t h = 0; h < n_v_heads_; ++h) {
    pa[h] = static_cast<float>(std::log(std::max(static_cast<double>(pa[h]), 1e-6)));  // U(0, 16) may draw 0
    const double dt = std::max(std::exp(pd[h] * (hi - lo) + lo), 1e-4);
    pd[h] = static_cast<float>(dt + std::log(-std::expm1(-dt)));
  }
  A_log_ = &add_param("A_log", a_log, false);
  dt_bias_ = &add_param("dt_bias", dt_bias, false);
  if (cfg.use_short_conv) {
    q_conv_ = add_module("q_conv1d",
                         std::make_unique<ShortConvolution>(key_dim_, cfg.conv_size, cfg.conv_bias, true, std, rng));
    k_conv_ = add_module("k_conv1d",
                         std::make_unique<ShortConvolution>(key_dim_, cfg.conv_size, cfg.conv_bias, true, std, rng));
    v_conv_ = add_module("v_conv1d",
                         std::make_unique<ShortConvolution>(value_dim_, cfg.conv_size, cfg.conv_bias, true, std, rng));
  }
  if (cfg.use_gate) g_proj_ = add_module("g_proj", std::make_unique<Linear>(d_model, value_dim_, false, std, rng));
  o_norm_ = add_module("o_norm", std::make_unique<RMSNorm>(head_v_, cfg.norm_eps));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(value_dim_, d_model, false, out_std, rng));
}

Variable GatedDeltaNet::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "gated_deltanet", "input must be [B, T, ",
           d_model_, "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads, HV = n_v_heads_;
  auto* st = static_cast<DeltaRuleState*>(ctx.state);
  auto branch = [&](Linear* proj, ShortConvolution* conv, size_t tail) {
    Variable y = proj->forward(x);
    return conv ? conv->forward(y, st ? &st->tails[tail] : nullptr) : ops::silu(y);
  };
  Variable q = ops::l2norm(ops::reshape(branch(q_proj_, q_conv_, 0), {B, T, H, head_k_}), 1e-6);
  Variable k = ops::l2norm(ops::reshape(branch(k_proj_, k_conv_, 1), {B, T, H, head_k_}), 1e-6);
  Variable v = ops::reshape(branch(v_proj_, v_conv_, 2), {B, T, HV, head_v_});
  if (HV > H) {  // GVA: each q/k head serves HV / H consecutive value heads
    auto repeat = [&](const Variable& t) {
      std::vector<Variable> copies(HV / H, ops::reshape(t, {B, T, H, 1, head_k_}));
      return ops::reshape(ops::concat(copies, 3), {B, T, HV, head_k_});
    };
    q = repeat(q);
    k = repeat(k);
  }
  Variable beta = ops::sigmoid(b_proj_->forward(x));
  if (cfg_.allow_neg_eigval) beta = ops::scale(beta, 2.0);
  Variable g = ops::mul(ops::softplus(ops::add(a_proj_->forward(x), *dt_bias_)), ops::scale(ops::exp(*A_log_), -1.0));
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_k_));
  Variable o;
  if (decode_step(ctx, T)) {
    Tensor tg = g.data();
    o = Variable(ops::delta_rule_step(q.data(), k.data(), v.data(), beta.data(), &tg, st->memory, scale));
  } else {
    Variable h0 = st ? Variable(st->memory) : Variable();
    ops::RecurrentOutput r = ops::delta_rule(q, k, v, beta, &g, st ? &h0 : nullptr, scale, cfg_.chunk_size);
    if (st) st->memory = r.state.data();  // a fresh tensor: h0, which the op may have saved, stays intact
    o = r.o;
  }
  o = o_norm_->forward(o);
  if (g_proj_) o = ops::mul(o, ops::silu(ops::reshape(g_proj_->forward(x), {B, T, HV, head_v_})));
  return o_proj_->forward(ops::reshape(o, {B, T, value_dim_}));
}

std::unique_ptr<LayerState> GatedDeltaNet::new_state(int64_t batch) const {
  auto s = std::make_unique<DeltaRuleState>();
  s->memory = Tensor::zeros({batch, n_v_heads_, head_k_, head_v_});
  if (cfg_.use_short_conv)
    for (int64_t c : {key_dim_, key_dim_, value_dim_})
      s->tails.push_back(Tensor::zeros({batch, cfg_.conv_size - 1, c}));
  return s;
}

int64_t GatedDeltaNet::state_bytes(int64_t) const {
  int64_t floats = n_v_heads_ * head_k_ * head_v_;
  if (cfg_.use_short_conv) floats += (cfg_.conv_size - 1) * (2 * key_dim_ + value_dim_);
  return floats * static_cast<int64_t>(sizeof(float));
}

// Per value head and token: the decay (K V), S^T k, the rank-one update and the read-out (2 K V each).
double GatedDeltaNet::extra_flops_per_token(int64_t) const { return 7.0 * n_v_heads_ * head_k_ * head_v_; }

}  // namespace sw::nn
