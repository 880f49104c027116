// Mamba2 block (Dao & Gu 2024, arXiv 2405.21060; mamba_ssm modules/mamba2.py, fla layers/mamba2.py):
//
//   z, xBC, dt = split(in_proj u)              d_inner, d_inner + 2 G N, H   (H = d_inner / headdim)
//   xBC        = silu(causal depthwise conv1d(xBC))     width d_conv, with bias, over x, B and C jointly
//   x, B, C    = split(xBC)                     x [H, P], B and C [G, N] shared by the H / G heads of a group
//   dt         = softplus(dt + dt_bias)          one step size per head and token
//   SSD        = the kernel's scalar-gate mode with g = -exp(A_log) dt, k = B, q = C, v = dt x, scale 1:
//                h_t = exp(dt_t A) h_{t-1} + B_t (dt_t x_t)^T,  y_t = h_t^T C_t   (state [N, P], the
//                transpose of mamba's [P, N]; dt folded into v as mamba's discretisation does)
//   y          = y + D x                         D per head
//   out        = out_proj(rmsnorm_grouped(y * silu(z)))   gated RMSNorm, norm_before_gate = False
//
// Init as mamba_ssm: A ~ U(A_init_min, A_init_max) stored as log; dt ~ logU(dt_min, dt_max) floored
// at dt_init_floor and stored through the inverse softplus in dt_bias; D = 1; conv1d PyTorch default.
// Projections use the engine's N(0, 0.02) (out_proj scaled by 1/sqrt(2 n_layers)), where mamba_ssm
// keeps PyTorch's default Linear init and rescales out_proj alike.
// The inference state is the conv window (d_conv - 1 rows of xBC) plus [H, N, P]: flat in the context.
#pragma once

#include "nn/linear_attention/common.h"

namespace sw::nn {

struct Mamba2Config {
  int64_t d_state = 128;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t headdim = 64;
  int64_t ngroups = 1;
  double A_init_min = 1.0;
  double A_init_max = 16.0;
  double dt_min = 1e-3;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  bool conv_bias = true;
  bool bias = false;
  double norm_eps = 1e-5;
  int64_t chunk_size = 32;

  template <class V>
  void visit(V& v) {
    v("d_state", d_state, "SSM state size N (key width of the kernel)");
    v("d_conv", d_conv, "width of the causal depthwise convolution");
    v("expand", expand, "inner width d_inner = expand * d_model");
    v("headdim", headdim, "head width P (H = d_inner / headdim)");
    v("ngroups", ngroups, "groups sharing B and C (H must be a multiple)");
    v("A_init_min", A_init_min, "smallest initial decay rate A (U(min, max), stored as log)");
    v("A_init_max", A_init_max, "largest initial decay rate A");
    v("dt_min", dt_min, "smallest initial step size dt (log-uniform init)");
    v("dt_max", dt_max, "largest initial step size dt (log-uniform init)");
    v("dt_init_floor", dt_init_floor, "floor of the initial dt");
    v("conv_bias", conv_bias, "bias in the causal convolution");
    v("bias", bias, "bias in in_proj and out_proj");
    v("norm_eps", norm_eps, "epsilon of the gated RMSNorm");
    v("chunk_size", chunk_size, "tokens per chunk of the chunkwise (SSD) training kernel");
  }
};

class Mamba2 : public Mixer {
 public:
  Mamba2(int64_t d_model, const Mamba2Config& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  Mamba2Config cfg_;
  int64_t d_model_, d_inner_, n_heads_, conv_dim_;
  Linear *in_proj_, *out_proj_;
  la_detail::ShortConvolution* conv1d_;
  Variable *dt_bias_, *A_log_, *D_, *norm_w_;
};

}  // namespace sw::nn
