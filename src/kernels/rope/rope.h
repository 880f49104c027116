// Rotary position embedding (RoPE), "rotate half" (GPT-NeoX / Llama HF) pairing: within the first
// rotary_dim channels of each head, channel i pairs with i + rotary_dim/2 and rotates by
// theta_i * pos, theta_i = base^(-2i / rotary_dim). Channels past rotary_dim pass through (partial
// rotary, as in GPT-NeoX/Phi and MLA's decoupled key part). Reference: kernels/ref/basic_ref.h.
// Backward is the inverse rotation. In place is allowed (x == y).
#pragma once

#include <cstdint>

namespace sw::kernels {

void rope_fwd(const float* x,          // [B, T, H, D]
              float* y,                // [B, T, H, D]
              const int32_t* positions,  // [T] absolute position of each token (shared across batch)
              int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, int64_t rotary_dim, float base);
void rope_bwd(const float* dy, float* dx, const int32_t* positions, int64_t batch, int64_t seq, int64_t heads,
              int64_t head_dim, int64_t rotary_dim, float base);

}  // namespace sw::kernels
