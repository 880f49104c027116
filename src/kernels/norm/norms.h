// Row normalisations over the last dimension, forward and backward.
// Reference: kernels/ref/basic_ref.h. Rows are contiguous: x is [rows, dim].
// Forwards save the per-row statistics their backward needs (rstd, and mean for LayerNorm) so the
// backward never recomputes a reduction. Weight gradients are reduced over rows without races
// (per-thread partial sums, then a fixed-order combine, so results are deterministic).
#pragma once

#include <cstdint>

namespace sw::kernels {

// y = x * rstd * w,  rstd = 1 / sqrt(mean(x^2) + eps)
void rmsnorm_fwd(const float* x,  // [rows, dim]
                 const float* w,  // [dim] or nullptr (no scale)
                 float* y,        // [rows, dim]
                 float* rstd,     // [rows] saved for backward
                 int64_t rows, int64_t dim, float eps);
void rmsnorm_bwd(const float* x, const float* w, const float* rstd, const float* dy,  // as forward
                 float* dx,  // [rows, dim]
                 float* dw,  // [dim] (written), or nullptr
                 int64_t rows, int64_t dim);

// y = (x - mean) * rstd * w + b
void layernorm_fwd(const float* x,  // [rows, dim]
                   const float* w,  // [dim] or nullptr
                   const float* b,  // [dim] or nullptr
                   float* y,        // [rows, dim]
                   float* mean,     // [rows]
                   float* rstd,     // [rows]
                   int64_t rows, int64_t dim, float eps);
void layernorm_bwd(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                   float* dx,  // [rows, dim]
                   float* dw,  // [dim] or nullptr
                   float* db,  // [dim] or nullptr
                   int64_t rows, int64_t dim);

// y = x / sqrt(sum(x^2) + eps): unit rows (DeltaNet keys, QK-norm).
void l2norm_fwd(const float* x, float* y, float* rnorm, int64_t rows, int64_t dim, float eps);  // rnorm: [rows]
void l2norm_bwd(const float* y, const float* rnorm, const float* dy, float* dx, int64_t rows, int64_t dim);

}  // namespace sw::kernels
