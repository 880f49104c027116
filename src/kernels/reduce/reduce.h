// Reductions and scans along one axis of a tensor viewed as [outer, n, inner] (contiguous).
// Reference: kernels/ref/basic_ref.h.
#pragma once

#include <cstdint>

namespace sw::kernels {

// y[o, i] = sum_k x[o, k, i]
void sum_axis_fwd(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);
// dx[o, k, i] = dy[o, i]
void sum_axis_bwd(const float* dy, float* dx, int64_t outer, int64_t n, int64_t inner);
// Inclusive cumulative sum along the middle axis; accumulated in double so long scans of fp32
// log-gates stay accurate.
void cumsum_fwd(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);
// dx[k] = sum_{j >= k} dy[j] (reverse cumulative sum).
void cumsum_bwd(const float* dy, float* dx, int64_t outer, int64_t n, int64_t inner);

}  // namespace sw::kernels
