// Softmax and log-softmax over the last dimension, forward and backward. x is [rows, dim].
// Reference: kernels/ref/basic_ref.h. Max-subtracted, so any finite input is safe; a row of -inf
// gives zeros (softmax) rather than NaN.
#pragma once

#include <cstdint>

namespace sw::kernels {

void softmax_fwd(const float* x, float* y, int64_t rows, int64_t dim);                        // y: [rows, dim]
void softmax_bwd(const float* y, const float* dy, float* dx, int64_t rows, int64_t dim);      // from the output y
void log_softmax_fwd(const float* x, float* y, int64_t rows, int64_t dim);
void log_softmax_bwd(const float* y, const float* dy, float* dx, int64_t rows, int64_t dim);  // from the output y

}  // namespace sw::kernels
