#include "kernels/reduce/reduce.h"

namespace sw::kernels {
namespace {
constexpr int64_t kParallelMin = 1 << 15;
}

void sum_axis_fwd(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * n * inner > kParallelMin)
  for (int64_t o = 0; o < outer; ++o) {
    float* yr = y + o * inner;
    for (int64_t i = 0; i < inner; ++i) yr[i] = 0.f;
    for (int64_t k = 0; k < n; ++k) {
      const float* xr = x + (o * n + k) * inner;
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) yr[i] += xr[i];
    }
  }
}

void sum_axis_bwd(const float* dy, float* dx, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * n * inner > kParallelMin)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k = 0; k < n; ++k)
      for (int64_t i = 0; i < inner; ++i) dx[(o * n + k) * inner + i] = dy[o * inner + i];
}

void cumsum_fwd(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > kParallelMin)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < n; ++k) {
        acc += x[(o * n + k) * inner + i];
        y[(o * n + k) * inner + i] = static_cast<float>(acc);
      }
    }
}

void cumsum_bwd(const float* dy, float* dx, int64_t outer, int64_t n, int64_t inner) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > kParallelMin)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double acc = 0;
      for (int64_t k = n - 1; k >= 0; --k) {
        acc += dy[(o * n + k) * inner + i];
        dx[(o * n + k) * inner + i] = static_cast<float>(acc);
      }
    }
}

}  // namespace sw::kernels
