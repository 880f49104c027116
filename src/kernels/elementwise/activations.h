// Elementwise activations, forward and backward, over contiguous fp32 arrays of n elements.
// Reference: kernels/ref/basic_ref.h. Backward kernels take the forward's input x (not its output)
// and write dx = dy * f'(x).
#pragma once

#include <cstdint>

namespace sw::kernels {

enum class Unary : uint8_t { silu, gelu, sigmoid, softplus, exp, log, relu, square };
const char* unary_name(Unary op);

void unary_fwd(Unary op, const float* x, float* y, int64_t n);                   // x, y: [n]
void unary_bwd(Unary op, const float* x, const float* dy, float* dx, int64_t n);  // all [n]

// SwiGLU: y = silu(gate) * up. Fused so the silu output is never stored.
void swiglu_fwd(const float* gate, const float* up, float* y, int64_t n);  // all [n]
void swiglu_bwd(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n);

}  // namespace sw::kernels
