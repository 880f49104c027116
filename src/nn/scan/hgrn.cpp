#include "nn/scan/hgrn.h"

#include <cmath>

#include "nn/scan/scan_common.h"
#include "ops/ops.h"
#include "ops/scan_ops.h"

namespace sw::nn {

using scan_detail::f32_param;

HgrnState::HgrnState(int64_t batch, int64_t width, int64_t conv_size, bool short_conv)
    : h(Tensor::zeros({batch, width})) {
  if (short_conv) {
    conv_i = Tensor::zeros({batch, conv_size - 1, width});
    conv_f = Tensor::zeros({batch, conv_size - 1, width});
  }
}

int64_t HgrnState::bytes() const {
  int64_t b = static_cast<int64_t>(h.nbytes());
  if (conv_i.defined()) b += static_cast<int64_t>(conv_i.nbytes() + conv_f.nbytes());
  return b;
}

Hgrn::Hgrn(int64_t d_model, const HgrnConfig& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), form_(scan_detail::parse_scan_form(cfg.scan_form, "hgrn")), d_model_(d_model) {
  SW_CHECK(cfg.expand_ratio > 0, "hgrn", "expand_ratio must be positive, got ", cfg.expand_ratio);
  SW_CHECK(!cfg.use_short_conv || cfg.conv_size >= 2, "hgrn", "conv_size must be at least 2, got ", cfg.conv_size);
  SW_CHECK(!cfg.use_lower_bound || (cfg.lower_bound_init > 0 && cfg.lower_bound_init < 1), "hgrn",
           "lower_bound_init must be in (0, 1), got ", cfg.lower_bound_init);
  SW_CHECK(cfg.norm_eps > 0, "hgrn", "norm_eps must be positive, got ", cfg.norm_eps);
  width_ = cfg.expand_ratio * d_model;
  const int64_t E = width_;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  i_proj_ = add_module("i_proj", std::make_unique<Linear>(d_model, E, false, std, rng));
  f_proj_ = add_module("f_proj", std::make_unique<Linear>(d_model, E, false, std, rng));
  g_proj_ = add_module("g_proj", std::make_unique<Linear>(d_model, E, false, std, rng));
  if (cfg.use_short_conv) {
    // PyTorch's Conv1d default init (fla's ShortConvolution is an nn.Conv1d).
    const double bound = 1.0 / std::sqrt(static_cast<double>(cfg.conv_size));
    f_conv_w_ = &add_param("f_conv1d.weight", init_uniform({E, cfg.conv_size}, -bound, bound, rng));
    if (cfg.conv_bias) f_conv_b_ = &add_param("f_conv1d.bias", init_uniform({E}, -bound, bound, rng), false);
    i_conv_w_ = &add_param("i_conv1d.weight", init_uniform({E, cfg.conv_size}, -bound, bound, rng));
    if (cfg.conv_bias) i_conv_b_ = &add_param("i_conv1d.bias", init_uniform({E}, -bound, bound, rng), false);
  }
  if (cfg.use_lower_bound) {
    const double logit = std::log(cfg.lower_bound_init / (1.0 - cfg.lower_bound_init));
    lower_bound_ = &add_param("lower_bound", Tensor::full({E}, logit), false);
  }
  if (cfg.elementwise_affine) g_norm_w_ = &add_param("g_norm.weight", Tensor::full({E}, 1.0), false);
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(E, d_model, false, out_std, rng));
}

Variable Hgrn::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.data().ndim() == 3 && x.dim(2) == d_model_, "hgrn", "input must be [B, T, ", d_model_, "], got ",
           x.data().describe());
  const int64_t B = x.dim(0), T = x.dim(1), E = width_;
  // An empty sequence leaves the state as it is. (Returned early also because the elementwise ops'
  // broadcasting turns a 0-length dim against 1 into 1, so [B, 0, E] * [E] would not stay empty.)
  if (T == 0) return Variable(Tensor::zeros({B, 0, d_model_}));
  auto* st = static_cast<HgrnState*>(ctx.state);
  if (st)
    SW_CHECK(st->h.dim(0) == B && st->h.dim(1) == E, "hgrn", "state ", st->h.describe(), " does not fit input ",
             x.data().describe(), " (expected [", B, ", ", E, "])");
  Variable i = i_proj_->forward(x), f = f_proj_->forward(x);
  if (cfg_.use_short_conv) {
    auto conv = [&](const Variable& in, Variable* w, Variable* b, Tensor* state) {
      Variable cw = f32_param(*w), cb = b ? f32_param(*b) : Variable(), s0 = st ? Variable(*state) : Variable();
      Tensor next;
      Variable out = ops::causal_conv1d(in, cw, b ? &cb : nullptr, st ? &s0 : nullptr, st ? &next : nullptr);
      if (st) *state = next;
      return out;
    };
    i = conv(i, i_conv_w_, i_conv_b_, st ? &st->conv_i : nullptr);
    f = conv(f, f_conv_w_, f_conv_b_, st ? &st->conv_f : nullptr);
  }
  // Log forget gate g and the tied input gate 1 - exp(g), the latter formed as (1 - lb) sigmoid(-f)
  // rather than by subtraction, so that it keeps its relative precision when the gate is near 1.
  Variable g, keep;
  Variable neg_f = ops::scale(f, -1.0);
  if (lower_bound_) {
    Variable lb = ops::sigmoid(*lower_bound_), one_minus_lb = ops::sigmoid(ops::scale(*lower_bound_, -1.0));
    g = ops::log(ops::add(lb, ops::mul(one_minus_lb, ops::sigmoid(f))));
    keep = ops::mul(one_minus_lb, ops::sigmoid(neg_f));
  } else {
    g = ops::scale(ops::softplus(neg_f), -1.0);  // logsigmoid(f), finite for any f
    keep = ops::sigmoid(neg_f);
  }
  Variable xin = ops::swiglu(i, keep);  // silu(i) * (1 - exp(g))
  Variable h;
  if (st && T == 1 && !grad_enabled()) {
    h = Variable(ops::hgrn_step(xin.data().reshape({B, E}), g.data().reshape({B, E}), st->h).reshape({B, 1, E}));
  } else {
    Variable h0 = st ? Variable(st->h) : Variable();
    ops::ScanResult r = ops::hgrn_scan(xin, g, st ? &h0 : nullptr, st != nullptr, form_);
    if (st) st->h = r.final_state.data();  // a fresh tensor: the h0 a backward may have kept is not touched
    h = r.out;
  }
  Variable o = ops::swiglu(g_proj_->forward(x), ops::rmsnorm(h, g_norm_w_, cfg_.norm_eps));
  return o_proj_->forward(o);
}

std::unique_ptr<LayerState> Hgrn::new_state(int64_t batch) const {
  return std::make_unique<HgrnState>(batch, width_, cfg_.conv_size, cfg_.use_short_conv);
}

int64_t Hgrn::state_bytes(int64_t) const {
  const int64_t conv = cfg_.use_short_conv ? 2 * (cfg_.conv_size - 1) * width_ : 0;
  return (width_ + conv) * static_cast<int64_t>(sizeof(float));
}

double Hgrn::extra_flops_per_token(int64_t) const {
  // Per channel: the gates (sigmoids, log, products ~10), the recurrence (exp, mul, add ~3), the
  // gated RMSNorm (~6), and the short convs when present (2 * 2 * conv_size).
  const double E = static_cast<double>(width_);
  return E * (19.0 + (cfg_.use_short_conv ? 4.0 * static_cast<double>(cfg_.conv_size) : 0.0));
}

}  // namespace sw::nn
