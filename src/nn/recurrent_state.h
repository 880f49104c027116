// Pieces shared by the recurrent mixers (the linear-attention and delta-rule families): their
// inference state and fla's ShortConvolution.
#pragma once

#include <vector>

#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

// Recurrent inference state: constant size whatever the context length.
class RecurrentState : public LayerState {
 public:
  Tensor memory;              // [B, H, K, V] matrix memory (rows are key channels), fp32
  std::vector<Tensor> tails;  // short convs: the last W-1 inputs [B, W-1, C]; RWKV: the previous token [B, 1, D]
  int64_t bytes() const override;
  const char* kind() const override { return "recurrent"; }
};

// Depthwise causal convolution over time (fla ShortConvolution, width 4 by default) with an optional
// SiLU. Parameters: weight [C, W] (fla stores [C, 1, W]) and an optional bias [C].
class ShortConvolution : public Module {
 public:
  // std > 0: weight ~ N(0, std) and zero bias (fla's model init); std == 0: PyTorch's Conv1d
  // default U(+-1/sqrt(W)) for both (mamba_ssm keeps it).
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

}  // namespace sw::nn
