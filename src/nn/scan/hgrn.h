// HGRN mixer (Qin et al. 2023, "Hierarchically Gated Recurrent Neural Network"), the fla
// `HGRNAttention` layer (fla/layers/hgrn.py):
//
//   i, f   = i_proj(x), f_proj(x)                  (optional short convs on each, no activation)
//   f      = log(lb + (1 - lb) * sigmoid(f))        lower-bounded forget gate, in log space
//   i      = silu(i) * (1 - exp(f))                 input gate tied to the forget gate
//   h_t    = exp(f_t) * h_{t-1} + i_t               element-wise linear recurrence (the hgrn op)
//   out    = o_proj(rmsnorm(h) * silu(g_proj(x)))   gated RMSNorm (fla FusedRMSNormGated)
//
// The lower bound. In fla the bound is a model-level parameter: lower_bounds [n_layers, width],
// softmax over layers then an exclusive cumsum, so layer l starts at l / n_layers (0 for the first
// layer) and the bounds stay increasing with depth. A mixer here is built without knowing its layer
// index, so each layer owns its bound instead: lb = sigmoid(lower_bound) per channel, learnable,
// initialised to lower_bound_init (default 0.5, the depth average of fla's initial bounds). This is
// a deviation from fla: the bounds are not tied across layers nor forced to grow with depth.
#pragma once

#include <string>

#include "kernels/scan/scan_form.h"
#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

struct HgrnConfig {
  int64_t expand_ratio = 1;
  bool use_short_conv = false;
  int64_t conv_size = 4;
  bool conv_bias = false;
  bool use_lower_bound = true;
  double lower_bound_init = 0.5;
  bool elementwise_affine = true;
  double norm_eps = 1e-6;
  std::string scan_form = "sequential";

  template <class V>
  void visit(V& v) {
    v("expand_ratio", expand_ratio, "recurrence width = expand_ratio * d_model");
    v("use_short_conv", use_short_conv, "causal depthwise convs on the input and forget projections");
    v("conv_size", conv_size, "width of the short convolutions");
    v("conv_bias", conv_bias, "bias in the short convolutions");
    v("use_lower_bound", use_lower_bound, "learnable per-channel lower bound on the forget gate");
    v("lower_bound_init", lower_bound_init, "initial lower bound in (0, 1)");
    v("elementwise_affine", elementwise_affine, "learnable weight in the output RMSNorm");
    v("norm_eps", norm_eps, "epsilon of the output RMSNorm");
    v("scan_form", scan_form, "recurrence algorithm: sequential or blelloch");
  }
};

// Recurrent state [B, width] plus the two short-conv windows when the layer has them.
class HgrnState : public LayerState {
 public:
  HgrnState(int64_t batch, int64_t width, int64_t conv_size, bool short_conv);
  Tensor h;               // [B, width]
  Tensor conv_i, conv_f;  // [B, conv_size - 1, width] or undefined
  int64_t bytes() const override;
  const char* kind() const override { return "recurrent"; }
};

class Hgrn : public Mixer {
 public:
  Hgrn(int64_t d_model, const HgrnConfig& cfg, int64_t n_layers, std::mt19937_64& rng);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;

 private:
  HgrnConfig cfg_;
  kernels::scan::ScanForm form_;
  int64_t d_model_, width_;
  Linear *i_proj_, *f_proj_, *g_proj_, *o_proj_;
  Variable *i_conv_w_ = nullptr, *i_conv_b_ = nullptr, *f_conv_w_ = nullptr, *f_conv_b_ = nullptr;
  Variable* lower_bound_ = nullptr;  // [width] logits of the lower bound
  Variable* g_norm_w_ = nullptr;     // [width]
};

}  // namespace sw::nn
