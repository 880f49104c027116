// Causal depthwise 1-D convolution (Mamba's conv1d, the short convolutions of GLA/DeltaNet layers),
// with a decode state so that a sequence processed in pieces gives the same result as one pass.
//
//   y[b,t,c] = bias[c] + sum_{j<W} w[c,j] * xx[b, t + j, c]   where xx = concat(state, x) along time
//
// state [B, W-1, C] holds the W-1 inputs before t = 0 (zeros for a fresh sequence); the final state is
// the last W-1 rows of xx. Decoding one token is the same call with T = 1. Reference:
// kernels/ref/basic_ref.h.
#pragma once

#include <cstdint>

namespace sw::kernels {

void causal_conv1d_fwd(const float* x,       // [B, T, C]
                       const float* w,       // [C, W]
                       const float* bias,    // [C] or nullptr
                       const float* state0,  // [B, W-1, C] or nullptr (zeros)
                       float* y,             // [B, T, C]
                       float* state_out,     // [B, W-1, C] or nullptr; may alias state0
                       int64_t batch, int64_t seq, int64_t channels, int64_t width);

void causal_conv1d_bwd(const float* x, const float* w, const float* state0, const float* dy,  // as forward
                       const float* dstate_out,  // [B, W-1, C] gradient into the final state, or nullptr
                       float* dx,                // [B, T, C]
                       float* dw,                // [C, W] (written)
                       float* dbias,             // [C] (written) or nullptr
                       float* dstate0,           // [B, W-1, C] or nullptr
                       int64_t batch, int64_t seq, int64_t channels, int64_t width);

}  // namespace sw::kernels
