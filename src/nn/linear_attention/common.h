// Pieces shared by the linear-attention mixers (linear attention, RetNet, GLA, HGRN2, Mamba2,
// RWKV-6): small activations the op set composes and the one place where a layer hands q, k, v and
// its gate to the kernel (decode step or sequence op). The state and the short convolution are shared
// with the delta-rule family (nn/recurrent_state.h).
#pragma once

#include <vector>

#include "kernels/linear/gated_linear_attention.h"
#include "nn/layers.h"
#include "nn/mixer.h"
#include "nn/recurrent_state.h"

namespace sw::nn {

using LinearAttentionState = RecurrentState;

namespace la_detail {

// A non-GEMM parameter (conv taps, bonus, static token-shift mixes) as f32. Module::to_bf16_weights()
// turns every 2-d parameter into bf16 for inference, but only the GEMM path reads bf16; the conv and
// elementwise ops read f32, so a converted parameter is widened back (frozen then, nothing is lost).
Variable f32_param(const Variable& p);

Variable tanh(const Variable& x);        // 2 sigmoid(2x) - 1 (the unary kernels have no tanh)
Variable logsigmoid(const Variable& x);  // -softplus(-x), exact for large |x|
Variable elu_plus_one(const Variable& x);  // elu(x) + 1 = relu(x) + exp(-relu(-x)), > 0
Variable clamp_min(const Variable& x, double lo);  // max(x, lo) = lo + relu(x - lo)

using nn::ShortConvolution;

// Runs the recurrence over q [B, T, H, K], k [B, T, H, K], v [B, T, H, V] with gate g (shape by
// mode, see ops/linear_attention_ops.h) and optional RWKV-6 bonus u [H, K]. Without a state: the
// whole sequence from a zero state (training). With one: continues from state->memory and replaces
// it; one token without autograd (decode: the step kernel has no backward) takes the kernel's
// in-place step, O(K V) per head.
Variable recurrence(const Variable& q, const Variable& k, const Variable& v, kernels::GlaGate gate, const Variable* g,
                    const Variable* u, LinearAttentionState* state, double scale, int64_t chunk_size);

// round(d_model * expand), checked to be an exact positive multiple of heads (fla asserts the same);
// `layer` and `what` name the layer and the width in the error.
int64_t expanded_width(int64_t d_model, double expand, int64_t heads, const char* layer, const char* what);

}  // namespace la_detail
}  // namespace sw::nn
