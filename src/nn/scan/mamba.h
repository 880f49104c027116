// Mamba (Mamba-1) mixer, the mamba_ssm `Mamba` block (modules/mamba_simple.py; fla layers/mamba.py):
//
//   x, z   = split(in_proj(u))                          d_inner = expand * d_model each
//   x      = silu(causal depthwise conv1d(x))            width d_conv, with bias
//   dt_low, B, C = split(x_proj(x))                      dt_rank, d_state, d_state
//   dt     = dt_proj.weight @ dt_low                     dt_proj.bias enters the scan as delta_bias
//   y      = selective_scan(x, dt, A = -exp(A_log), B, C, D, z, delta_bias, softplus)
//          = (C . h_t + D x_t) * silu(z_t),  h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t
//   out    = out_proj(y)
//
// Training and prefill run the whole-sequence selective-scan kernel (sequential token loop by default,
// or the Blelloch parallel scan); decode runs the kernel's single-token step. The inference state is
// the conv window (d_conv - 1 inputs per channel) plus the SSM state [d_inner, d_state], both constant
// in the context length.
#pragma once

#include <string>

#include "kernels/scan/scan_form.h"
#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

struct MambaConfig {
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0: ceil(d_model / 16)
  double dt_min = 1e-3;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double dt_scale = 1.0;
  bool conv_bias = true;
  bool bias = false;  // in_proj / out_proj bias
  std::string scan_form = "sequential";

  template <class V>
  void visit(V& v) {
    v("d_state", d_state, "SSM state size N per channel");
    v("d_conv", d_conv, "width of the causal depthwise convolution");
    v("expand", expand, "inner width d_inner = expand * d_model");
    v("dt_rank", dt_rank, "rank of the dt projection (0 = ceil(d_model / 16))");
    v("dt_min", dt_min, "smallest initial step size dt (log-uniform init)");
    v("dt_max", dt_max, "largest initial step size dt (log-uniform init)");
    v("dt_init_floor", dt_init_floor, "floor of the initial dt");
    v("dt_scale", dt_scale, "scale of the dt_proj weight init (U(+-dt_scale / sqrt(dt_rank)))");
    v("conv_bias", conv_bias, "bias in the causal convolution");
    v("bias", bias, "bias in in_proj and out_proj");
    v("scan_form", scan_form, "selective-scan algorithm: sequential or blelloch");
  }
};

// Conv window and SSM state of one layer for a batch of sequences.
class MambaState : public LayerState {
 public:
  MambaState(int64_t batch, int64_t d_inner, int64_t d_conv, int64_t d_state);
  Tensor conv;  // [B, d_conv - 1, d_inner] last inputs of the convolution
  Tensor ssm;   // [B, d_inner, d_state]
  int64_t bytes() const override { return static_cast<int64_t>(conv.nbytes() + ssm.nbytes()); }
  const char* kind() const override { return "recurrent"; }
};

class Mamba : public Mixer {
 public:
  Mamba(int64_t d_model, const MambaConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  MambaConfig cfg_;
  kernels::scan::ScanForm form_;
  int64_t d_model_, d_inner_, dt_rank_;
  Linear *in_proj_, *x_proj_, *out_proj_;
  Variable *conv_w_, *conv_b_ = nullptr, *dt_w_, *dt_b_, *A_log_, *D_;
};

}  // namespace sw::nn
