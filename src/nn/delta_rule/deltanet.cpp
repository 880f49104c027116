#include "nn/delta_rule/deltanet.h"

#include <cmath>

#include "ops/delta_rule_ops.h"
#include "ops/ops.h"

namespace sw::nn {

DeltaNet::DeltaNet(int64_t d_model, const DeltaNetConfig& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const char* op = "deltanet";
  SW_CHECK(cfg.n_heads > 0, op, "n_heads must be positive, got ", cfg.n_heads);
  key_dim_ = static_cast<int64_t>(std::llround(d_model * cfg.expand_k));
  value_dim_ = static_cast<int64_t>(std::llround(d_model * cfg.expand_v));
  SW_CHECK(key_dim_ > 0 && value_dim_ > 0 && key_dim_ % cfg.n_heads == 0 && value_dim_ % cfg.n_heads == 0, op,
           "key width ", key_dim_, " (expand_k ", cfg.expand_k, ") and value width ", value_dim_, " (expand_v ",
           cfg.expand_v, ") must be positive multiples of n_heads ", cfg.n_heads);
  SW_CHECK(cfg.qk_activation == "silu" || cfg.qk_activation == "relu" || cfg.qk_activation == "identity", op,
           "qk_activation must be silu, relu or identity, got '", cfg.qk_activation, "'");
  SW_CHECK(!cfg.use_short_conv || cfg.conv_size >= 2, op, "conv_size must be at least 2, got ", cfg.conv_size);
  SW_CHECK(cfg.chunk_size >= 1 && cfg.chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", cfg.chunk_size);
  SW_CHECK(cfg.norm_eps > 0, op, "norm_eps must be positive, got ", cfg.norm_eps);
  head_k_ = key_dim_ / cfg.n_heads;
  head_v_ = value_dim_ / cfg.n_heads;
  // fla initialises every Linear and Conv1d with N(0, 0.02); the output projection is scaled by
  // 1/sqrt(2 n_layers) as every residual branch of this engine (GPT-2).
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, key_dim_, false, std, rng));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, value_dim_, false, std, rng));
  if (cfg.use_beta) b_proj_ = add_module("b_proj", std::make_unique<Linear>(d_model, cfg.n_heads, false, std, rng));
  if (cfg.use_short_conv) {
    const bool qk_silu = cfg.qk_activation == "silu";
    q_conv_ = add_module("q_conv1d",
                         std::make_unique<ShortConvolution>(key_dim_, cfg.conv_size, cfg.conv_bias, qk_silu, std, rng));
    k_conv_ = add_module("k_conv1d",
                         std::make_unique<ShortConvolution>(key_dim_, cfg.conv_size, cfg.conv_bias, qk_silu, std, rng));
    v_conv_ = add_module("v_conv1d",
                         std::make_unique<ShortConvolution>(value_dim_, cfg.conv_size, cfg.conv_bias, true, std, rng));
  }
  if (cfg.use_gate) g_proj_ = add_module("g_proj", std::make_unique<Linear>(d_model, value_dim_, false, std, rng));
  o_norm_ = add_module("o_norm", std::make_unique<RMSNorm>(head_v_, cfg.norm_eps));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(value_dim_, d_model, false, out_std, rng));
}

Variable DeltaNet::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.defined() && x.data().ndim() == 3 && x.dim(2) == d_model_, "deltanet", "input must be [B, T, ", d_model_,
           "], got ", x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads;
  auto* st = static_cast<DeltaRuleState*>(ctx.state);
  // Projection, then the short conv (its activation inside) continuing from the state's tail; without
  // convs, fla applies SiLU to q, k (when qk_activation is silu) and always to v.
  auto branch = [&](Linear* proj, ShortConvolution* conv, size_t tail, bool silu) {
    Variable y = proj->forward(x);
    if (conv) return conv->forward(y, st ? &st->tails[tail] : nullptr);
    return silu ? ops::silu(y) : y;
  };
  const bool qk_silu = cfg_.qk_activation == "silu";
  Variable q = ops::reshape(branch(q_proj_, q_conv_, 0, qk_silu), {B, T, H, head_k_});
  Variable k = ops::reshape(branch(k_proj_, k_conv_, 1, qk_silu), {B, T, H, head_k_});
  Variable v = ops::reshape(branch(v_proj_, v_conv_, 2, true), {B, T, H, head_v_});
  if (cfg_.qk_activation == "relu") q = ops::relu(q), k = ops::relu(k);
  // fla's use_qk_l2norm_in_kernel: x / sqrt(sum x^2 + 1e-6).
  q = ops::l2norm(q, 1e-6);
  k = ops::l2norm(k, 1e-6);
  Variable beta = b_proj_ ? ops::sigmoid(b_proj_->forward(x)) : Variable(Tensor::full({B, T, H}, 1.0));
  if (cfg_.allow_neg_eigval) beta = ops::scale(beta, 2.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_k_));
  Variable o;
  if (decode_step(ctx, T)) {
    o = Variable(ops::delta_rule_step(q.data(), k.data(), v.data(), beta.data(), nullptr, st->memory, scale));
  } else {
    Variable h0 = st ? Variable(st->memory) : Variable();
    ops::RecurrentOutput r = ops::delta_rule(q, k, v, beta, nullptr, st ? &h0 : nullptr, scale, cfg_.chunk_size);
    if (st) st->memory = r.state.data();  // a fresh tensor: h0, which the op may have saved, stays intact
    o = r.o;
  }
  o = o_norm_->forward(o);
  if (g_proj_) o = ops::mul(o, ops::silu(ops::reshape(g_proj_->forward(x), {B, T, H, head_v_})));
  return o_proj_->forward(ops::reshape(o, {B, T, value_dim_}));
}

std::unique_ptr<LayerState> DeltaNet::new_state(int64_t batch) const {
  auto s = std::make_unique<DeltaRuleState>();
  s->memory = Tensor::zeros({batch, cfg_.n_heads, head_k_, head_v_});
  if (cfg_.use_short_conv)
    for (int64_t c : {key_dim_, key_dim_, value_dim_})
      s->tails.push_back(Tensor::zeros({batch, cfg_.conv_size - 1, c}));
  return s;
}

int64_t DeltaNet::state_bytes(int64_t) const {
  int64_t floats = cfg_.n_heads * head_k_ * head_v_;
  if (cfg_.use_short_conv) floats += (cfg_.conv_size - 1) * (2 * key_dim_ + value_dim_);
  return floats * static_cast<int64_t>(sizeof(float));
}

// Per head and token: S^T k, the rank-one update and the read-out, 2 K V each. (The short convs are
// 2-d parameters, already counted with the GEMM weights.)
double DeltaNet::extra_flops_per_token(int64_t) const { return 6.0 * cfg_.n_heads * head_k_ * head_v_; }

}  // namespace sw::nn
