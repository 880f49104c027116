// Pieces shared by the delta-rule mixers (DeltaNet, Gated DeltaNet, RWKV-7): the inference state
// (matrix memory plus short-conv or token-shift tails) and fla's ShortConvolution.
#pragma once

#include <vector>

#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

// Recurrent inference state: constant size whatever the context length.
class DeltaRuleState : public LayerState {
 public:
  Tensor memory;              // [B, H, K, V] matrix memory (rows are key channels), fp32
  std::vector<Tensor> tails;  // short convs: the last W-1 inputs [B, W-1, C]; RWKV-7: the previous token [B, 1, D]
  int64_t bytes() const override;
  const char* kind() const override { return "recurrent"; }
};

// Depthwise causal convolution over time (fla ShortConvolution, width 4 by default) with an optional
// SiLU. Parameters: weight [C, W] (fla stores [C, 1, W]) and an optional bias [C].
class ShortConvolution : public Module {
 public:
  ShortConvolution(int64_t channels, int64_t width, bool bias, bool silu, double std, std::mt19937_64& rng);
  // x [B, T, C] -> [B, T, C]. With `tail` (the last W-1 inputs, [B, W-1, C]) the convolution continues
  // from it and `tail` is replaced by the new one; null: zero history (training).
  Variable forward(const Variable& x, Tensor* tail);
  int64_t channels() const { return channels_; }
  int64_t width() const { return width_; }

 private:
  int64_t channels_, width_;
  bool silu_;
  Variable* w_;
  Variable* b_ = nullptr;
};

// True when the layer may take the single-token decode path: a state to advance, one token, and no
// gradient being recorded (the step kernels have no backward).
inline bool decode_step(const MixerContext& ctx, int64_t T) { return ctx.state && T == 1 && !grad_enabled(); }

// y = tanh(x) as 2 sigmoid(2x) - 1 (the unary kernels have no tanh; RWKV's LoRA uses it).
Variable tanh_op(const Variable& x);

}  // namespace sw::nn
