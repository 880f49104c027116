#include "kernels/softmax/softmax.h"

#include <cmath>
#include <limits>

namespace sw::kernels {
namespace {
constexpr int64_t kParallelMin = 1 << 14;

float row_max(const float* x, int64_t dim) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < dim; ++j) m = x[j] > m ? x[j] : m;
  return m;
}
}  // namespace

void softmax_fwd(const float* x, float* y, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float m = row_max(xr, dim);
    if (m == -std::numeric_limits<float>::infinity()) {
      for (int64_t j = 0; j < dim; ++j) yr[j] = 0.f;
      continue;
    }
    float s = 0.f;
    for (int64_t j = 0; j < dim; ++j) {
      yr[j] = std::exp(xr[j] - m);
      s += yr[j];
    }
    float inv = 1.f / s;
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) yr[j] *= inv;
  }
}

// dx = y * (dy - sum(dy * y))
void softmax_bwd(const float* y, const float* dy, float* dx, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * dim;
    const float* dyr = dy + r * dim;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < dim; ++j) dot += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) dx[r * dim + j] = yr[j] * (dyr[j] - dot);
  }
}

void log_softmax_fwd(const float* x, float* y, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float m = row_max(xr, dim);
    float s = 0.f;
    for (int64_t j = 0; j < dim; ++j) s += std::exp(xr[j] - m);
    float lse = m + std::log(s);
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) y[r * dim + j] = xr[j] - lse;
  }
}

// dx = dy - exp(y) * sum(dy)
void log_softmax_bwd(const float* y, const float* dy, float* dx, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * dim;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < dim; ++j) s += dyr[j];
    for (int64_t j = 0; j < dim; ++j) dx[r * dim + j] = dyr[j] - std::exp(y[r * dim + j]) * s;
  }
}

}  // namespace sw::kernels
