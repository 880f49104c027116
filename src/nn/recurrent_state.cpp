#include "nn/recurrent_state.h"

#include <cmath>

#include "ops/ops.h"

namespace sw::nn {

int64_t RecurrentState::bytes() const {
  int64_t b = memory.defined() ? static_cast<int64_t>(memory.nbytes()) : 0;
  for (const Tensor& t : tails) b += static_cast<int64_t>(t.nbytes());
  return b;
}

ShortConvolution::ShortConvolution(int64_t channels, int64_t width, bool bias, bool silu, double std,
                                   std::mt19937_64& rng)
    : channels_(channels), width_(width), silu_(silu) {
  SW_CHECK(channels > 0 && width >= 1, "short_conv", "channels and width must be positive, got ", channels, " and ",
           width);
  if (std > 0) {
    w_ = &add_param("weight", init_normal({channels, width}, std, rng));
    if (bias) b_ = &add_param("bias", Tensor::zeros({channels}), false);
  } else {
    // PyTorch Conv1d default for a depthwise conv: fan_in = width, weight and bias U(+-1/sqrt(fan_in)).
    const double bound = 1.0 / std::sqrt(static_cast<double>(width));
    w_ = &add_param("weight", init_uniform({channels, width}, -bound, bound, rng));
    if (bias) b_ = &add_param("bias", init_uniform({channels}, -bound, bound, rng), false);
  }
}

// causal_conv1d widens a bf16 weight (a model converted for inference) itself.
Variable ShortConvolution::forward(const Variable& x, Tensor* tail) {
  Variable y;
  if (tail) {
    Variable s0(*tail);
    Tensor next;
    y = ops::causal_conv1d(x, *w_, b_, &s0, &next);
    *tail = next;  // a fresh tensor: the one the op may have saved for backward is left untouched
  } else {
    y = ops::causal_conv1d(x, *w_, b_, nullptr);
  }
  return silu_ ? ops::silu(y) : y;
}

}  // namespace sw::nn
