// Pieces shared by the delta-rule mixers (DeltaNet, Gated DeltaNet, RWKV-7); the state and the short
// convolution they share with the linear-attention family are in nn/recurrent_state.h.
#pragma once

#include <vector>

#include "nn/layers.h"
#include "nn/mixer.h"
#include "nn/recurrent_state.h"

namespace sw::nn {

using DeltaRuleState = RecurrentState;  // matrix memory plus short-conv or token-shift tails

// True when the layer may take the single-token decode path: a state to advance, one token, and no
// gradient being recorded (the step kernels have no backward).
inline bool decode_step(const MixerContext& ctx, int64_t T) { return ctx.state && T == 1 && !grad_enabled(); }

// y = tanh(x) as 2 sigmoid(2x) - 1 (the unary kernels have no tanh; RWKV's LoRA uses it).
Variable tanh_op(const Variable& x);

}  // namespace sw::nn
