#include "nn/linear_attention/lightning.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/lightning_ops.h"
#include "ops/ops.h"

namespace sw::nn {

std::vector<double> LightningAttention::slope_rates(int64_t n_heads, int64_t layer_index, int64_t n_layers) {
  const double base = 1.0 / std::exp2(8.0 / static_cast<double>(n_heads));
  const double factor =
      1.0 - static_cast<double>(layer_index) / (static_cast<double>(n_layers) - 1.0 + 1e-5) + 1e-5;
  std::vector<double> s(n_heads);
  for (int64_t h = 0; h < n_heads; ++h) s[h] = std::pow(base, static_cast<double>(h + 1)) * factor;
  return s;
}

LightningAttention::LightningAttention(int64_t d_model, const LightningConfig& cfg, const MixerSite& site,
                                       std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "lightning";
  SW_CHECK(d_model > 0, op, "d_model must be positive, got ", d_model);
  SW_CHECK(cfg.n_heads > 0, op, "n_heads must be positive, got ", cfg.n_heads);
  SW_CHECK(cfg.head_dim >= 0, op, "head_dim must be >= 0 (0: d_model / n_heads), got ", cfg.head_dim);
  if (cfg.head_dim == 0)
    SW_CHECK(d_model % cfg.n_heads == 0, op, "d_model ", d_model, " must be a multiple of n_heads ", cfg.n_heads,
             " when head_dim is 0");
  head_dim_ = cfg.head_dim > 0 ? cfg.head_dim : d_model / cfg.n_heads;
  inner_ = cfg.n_heads * head_dim_;
  SW_CHECK(cfg.block_size >= 1 && cfg.block_size <= 1024, op, "block_size must be in [1, 1024], got ",
           cfg.block_size);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  SW_CHECK(site.n_layers >= 1 && site.layer_index >= 0 && site.layer_index < site.n_layers, op, "layer index ",
           site.layer_index, " outside [0, ", site.n_layers, ")");
  const std::vector<double> s = slope_rates(cfg.n_heads, site.layer_index, site.n_layers);
  log_decay_ = Tensor::empty({cfg.n_heads});
  for (int64_t h = 0; h < cfg.n_heads; ++h) log_decay_.data<float>()[h] = static_cast<float>(-s[h]);
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(site.n_layers));
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, inner_, false, std, rng));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, inner_, false, std, rng));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, inner_, false, std, rng));
  output_gate_ = add_module("output_gate", std::make_unique<Linear>(d_model, inner_, false, std, rng));
  norm_ = add_module("norm", std::make_unique<RMSNorm>(inner_, cfg.norm_eps));
  out_proj_ = add_module("out_proj", std::make_unique<Linear>(inner_, d_model, false, out_std, rng));
}

Variable LightningAttention::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "lightning", "input must be [B, T, ",
           d_model_, "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads, d = head_dim_;
  auto* st = static_cast<RecurrentState*>(ctx.state);
  auto heads = [&](Linear* proj) { return ops::reshape(ops::silu(proj->forward(x)), {B, T, H, d}); };
  Variable q = heads(q_proj_), k = heads(k_proj_), v = heads(v_proj_);
  constexpr double kScale = 1.0;  // MiniMax applies no 1/sqrt(d) to q
  Variable o;
  if (st && T == 1 && !grad_enabled()) {
    o = Variable(ops::lightning_attention_step(q.data(), k.data(), v.data(), log_decay_, st->memory, kScale));
  } else {
    Variable h0 = st ? Variable(st->memory) : Variable();
    ops::LightningOutput r =
        ops::lightning_attention(q, k, v, Variable(log_decay_), st ? &h0 : nullptr, kScale, cfg_.block_size);
    if (st) st->memory = r.state.data();  // a fresh tensor: h0, which the op may have saved, stays intact
    o = r.o;
  }
  o = norm_->forward(ops::reshape(o, {B, T, inner_}));
  o = ops::mul(ops::sigmoid(output_gate_->forward(x)), o);
  return out_proj_->forward(o);
}

std::unique_ptr<LayerState> LightningAttention::new_state(int64_t batch) const {
  auto s = std::make_unique<RecurrentState>();
  s->memory = Tensor::zeros({batch, cfg_.n_heads, head_dim_, head_dim_});
  return s;
}

int64_t LightningAttention::state_bytes(int64_t) const {
  return cfg_.n_heads * head_dim_ * head_dim_ * static_cast<int64_t>(sizeof(float));
}

// Per head and token, as the block kernel computes it (block C = min(block_size, context), d = head_dim):
// intra scores q k^T and their product with v over the causal half of a C x C block, C d + C d FLOPs;
// inter read-out (diag(lambda) q) S, 2 d^2; state update (diag(lambda) k)^T v plus the block decay,
// 2 d^2 + d^2 / C.
double LightningAttention::extra_flops_per_token(int64_t context) const {
  const double d = static_cast<double>(head_dim_);
  const double C = static_cast<double>(std::max<int64_t>(1, std::min(cfg_.block_size, context)));
  return static_cast<double>(cfg_.n_heads) * (2.0 * C * d + 4.0 * d * d + d * d / C);
}

}  // namespace sw::nn
