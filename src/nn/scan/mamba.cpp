#include "nn/scan/mamba.h"

#include <cmath>

#include "nn/scan/scan_common.h"
#include "ops/ops.h"
#include "ops/scan_ops.h"

namespace sw::nn {

using scan_detail::f32_param;

MambaState::MambaState(int64_t batch, int64_t d_inner, int64_t d_conv, int64_t d_state)
    : conv(Tensor::zeros({batch, d_conv - 1, d_inner})), ssm(Tensor::zeros({batch, d_inner, d_state})) {}

Mamba::Mamba(int64_t d_model, const MambaConfig& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), form_(scan_detail::parse_scan_form(cfg.scan_form, "mamba")), d_model_(d_model) {
  SW_CHECK(cfg.d_state > 0 && cfg.expand > 0, "mamba", "d_state and expand must be positive, got ", cfg.d_state,
           " and ", cfg.expand);
  SW_CHECK(cfg.d_conv >= 2, "mamba", "d_conv must be at least 2, got ", cfg.d_conv);
  SW_CHECK(cfg.dt_min > 0 && cfg.dt_max >= cfg.dt_min && cfg.dt_init_floor > 0 && cfg.dt_scale > 0, "mamba",
           "need 0 < dt_min <= dt_max, dt_init_floor > 0 and dt_scale > 0, got dt_min ", cfg.dt_min, ", dt_max ",
           cfg.dt_max, ", dt_init_floor ", cfg.dt_init_floor, ", dt_scale ", cfg.dt_scale);
  d_inner_ = cfg.expand * d_model;
  dt_rank_ = cfg.dt_rank ? cfg.dt_rank : (d_model + 15) / 16;
  SW_CHECK(dt_rank_ > 0, "mamba", "dt_rank must be positive, got ", dt_rank_);
  const int64_t E = d_inner_, N = cfg.d_state, W = cfg.d_conv, R = dt_rank_;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);  // GPT-2 residual scaling
  in_proj_ = add_module("in_proj", std::make_unique<Linear>(d_model, 2 * E, cfg.bias, std, rng));
  // PyTorch's Conv1d default (mamba_ssm keeps it): U(+-1/sqrt(fan_in)), fan_in = d_conv for a depthwise conv.
  const double conv_bound = 1.0 / std::sqrt(static_cast<double>(W));
  conv_w_ = &add_param("conv1d.weight", init_uniform({E, W}, -conv_bound, conv_bound, rng));
  if (cfg.conv_bias) conv_b_ = &add_param("conv1d.bias", init_uniform({E}, -conv_bound, conv_bound, rng), false);
  x_proj_ = add_module("x_proj", std::make_unique<Linear>(E, R + 2 * N, false, std, rng));
  // dt_proj: weight U(+-dt_scale / sqrt(dt_rank)); bias = softplus^-1(dt) with dt log-uniform in
  // [dt_min, dt_max], floored, so that the initial step sizes span two decades (mamba_simple.py).
  const double dt_bound = cfg.dt_scale / std::sqrt(static_cast<double>(R));
  dt_w_ = &add_param("dt_proj.weight", init_uniform({E, R}, -dt_bound, dt_bound, rng));
  Tensor bias = init_uniform({E}, 0.0, 1.0, rng);
  float* pb = bias.data<float>();
  const double lo = std::log(cfg.dt_min), hi = std::log(cfg.dt_max);
  for (int64_t i = 0; i < E; ++i) {
    double dt = std::max(std::exp(lo + (hi - lo) * pb[i]), cfg.dt_init_floor);
    pb[i] = static_cast<float>(dt + std::log(-std::expm1(-dt)));  // inverse of softplus
  }
  dt_b_ = &add_param("dt_proj.bias", bias, false);
  // S4D-real: A[:, n] = -(n + 1), stored as A_log = log(n + 1); kept out of weight decay.
  Tensor a_log = Tensor::empty({E, N});
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < N; ++n) a_log.data<float>()[e * N + n] = static_cast<float>(std::log(n + 1.0));
  A_log_ = &add_param("A_log", a_log, false);
  D_ = &add_param("D", Tensor::full({E}, 1.0), false);
  out_proj_ = add_module("out_proj", std::make_unique<Linear>(E, d_model, cfg.bias, out_std, rng));
}

Variable Mamba::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.data().ndim() == 3 && x.dim(2) == d_model_, "mamba", "input must be [B, T, ", d_model_, "], got ",
           x.data().describe());
  const int64_t B = x.dim(0), T = x.dim(1), E = d_inner_, N = cfg_.d_state, R = dt_rank_;
  // An empty sequence: nothing to mix, and the state stays as it is.
  if (T == 0) return Variable(Tensor::zeros({B, 0, d_model_}));
  auto* st = static_cast<MambaState*>(ctx.state);
  if (st)
    SW_CHECK(st->ssm.dim(0) == B && st->ssm.dim(1) == E && st->ssm.dim(2) == N, "mamba", "state ", st->ssm.describe(),
             " does not fit input ", x.data().describe(), " (expected [", B, ", ", E, ", ", N, "])");
  Variable xz = in_proj_->forward(x);
  Variable xs = ops::slice(xz, 2, 0, E), z = ops::slice(xz, 2, E, 2 * E);
  Variable conv_w = f32_param(*conv_w_), conv_b = conv_b_ ? f32_param(*conv_b_) : Variable();
  Variable conv_state = st ? Variable(st->conv) : Variable();
  Tensor conv_next;
  xs = ops::silu(ops::causal_conv1d(xs, conv_w, conv_b_ ? &conv_b : nullptr, st ? &conv_state : nullptr,
                                    st ? &conv_next : nullptr));
  if (st) st->conv = conv_next;
  Variable dbc = x_proj_->forward(xs);
  Variable dt_low = ops::slice(dbc, 2, 0, R);
  Variable Bm = ops::slice(dbc, 2, R, R + N), Cm = ops::slice(dbc, 2, R + N, R + 2 * N);
  Variable dt = ops::linear(dt_low, *dt_w_, nullptr, matmul_dtype());  // dt_proj's bias goes to the scan
  Variable A = ops::scale(ops::exp(f32_param(*A_log_)), -1.0);
  Variable y;
  if (st && T == 1 && !grad_enabled()) {
    // Decode: one token through the kernel's step, state updated in place.
    Tensor A_t = A.data(), D_t = D_->data(), bias_t = dt_b_->data(), z_t = z.data().reshape({B, E});
    Tensor out =
        ops::selective_scan_step(xs.data().reshape({B, E}), dt.data().reshape({B, E}), A_t, Bm.data().reshape({B, N}),
                                 Cm.data().reshape({B, N}), &D_t, &z_t, &bias_t, true, st->ssm);
    y = Variable(out.reshape({B, 1, E}));
  } else {
    Variable h0 = st ? Variable(st->ssm) : Variable();
    ops::ScanResult r =
        ops::selective_scan(xs, dt, A, Bm, Cm, D_, &z, dt_b_, st ? &h0 : nullptr, true, st != nullptr, form_);
    if (st) st->ssm = r.final_state.data();  // a fresh tensor: the h0 a backward may have kept is not touched
    y = r.out;
  }
  return out_proj_->forward(y);
}

std::unique_ptr<LayerState> Mamba::new_state(int64_t batch) const {
  return std::make_unique<MambaState>(batch, d_inner_, cfg_.d_conv, cfg_.d_state);
}

int64_t Mamba::state_bytes(int64_t) const {
  return (d_inner_ * (cfg_.d_conv - 1) + d_inner_ * cfg_.d_state) * static_cast<int64_t>(sizeof(float));
}

double Mamba::extra_flops_per_token(int64_t) const {
  // Per channel and state: exp(dt A) (counted as one), h = dA h + dt B u (3), y += C h (2), dt A (1);
  // per channel: the depthwise conv (2 d_conv), softplus, D skip and the silu gate (~8).
  const double E = static_cast<double>(d_inner_);
  return 7.0 * E * static_cast<double>(cfg_.d_state) + 2.0 * E * static_cast<double>(cfg_.d_conv) + 8.0 * E;
}

}  // namespace sw::nn
