#include "kernels/norm/norms.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "core/scratch.h"

namespace sw::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;

// Sums per-thread partial rows [nthreads, dim] into out[dim] in thread order (deterministic).
void combine_partials(const float* partial, int nthreads, int64_t dim, float* out) {
  for (int64_t j = 0; j < dim; ++j) out[j] = 0.f;
  for (int t = 0; t < nthreads; ++t)
    for (int64_t j = 0; j < dim; ++j) out[j] += partial[t * dim + j];
}

}  // namespace

void rmsnorm_fwd(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < dim; ++j) ss += xr[j] * xr[j];
    float rs = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
    rstd[r] = rs;
    if (w) {
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * rs * w[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * rs;
    }
  }
}

// With xhat = x * rstd and g = dy * w:  dx = rstd * (g - xhat * mean(g * xhat));  dw = sum_rows dy * xhat.
void rmsnorm_bwd(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                 int64_t rows, int64_t dim) {
  int nthreads = rows * dim > kParallelMin ? omp_get_max_threads() : 1;
  float* partial = dw ? scratch_floats(0, static_cast<size_t>(nthreads) * dim) : nullptr;
  if (partial) std::memset(partial, 0, sizeof(float) * nthreads * dim);
#pragma omp parallel num_threads(nthreads)
  {
    float* my = partial ? partial + static_cast<int64_t>(omp_get_thread_num()) * dim : nullptr;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      const float* dyr = dy + r * dim;
      float* dxr = dx + r * dim;
      float rs = rstd[r];
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < dim; ++j) dot += dyr[j] * (w ? w[j] : 1.f) * xr[j];
      float c = dot * rs * rs / static_cast<float>(dim);
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) dxr[j] = rs * (dyr[j] * (w ? w[j] : 1.f) - xr[j] * c);
      if (my) {
#pragma omp simd
        for (int64_t j = 0; j < dim; ++j) my[j] += dyr[j] * xr[j] * rs;
      }
    }
  }
  if (dw) combine_partials(partial, nthreads, dim, dw);
}

void layernorm_fwd(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t rows,
                   int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < dim; ++j) s += xr[j];
    float mu = s / static_cast<float>(dim);
    float ss = 0.f;  // two-pass variance: no cancellation when |mean| >> std
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < dim; ++j) ss += (xr[j] - mu) * (xr[j] - mu);
    float rs = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
    mean[r] = mu;
    rstd[r] = rs;
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) yr[j] = (xr[j] - mu) * rs * (w ? w[j] : 1.f) + (b ? b[j] : 0.f);
  }
}

// With xhat = (x - mean) * rstd and g = dy * w:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
void layernorm_bwd(const float* x, const float* w, const float* mean, const float* rstd, const float* dy, float* dx,
                   float* dw, float* db, int64_t rows, int64_t dim) {
  int nthreads = rows * dim > kParallelMin ? omp_get_max_threads() : 1;
  bool need = dw || db;
  float* partial = need ? scratch_floats(0, static_cast<size_t>(nthreads) * dim * 2) : nullptr;
  if (partial) std::memset(partial, 0, sizeof(float) * nthreads * dim * 2);
#pragma omp parallel num_threads(nthreads)
  {
    float* pw = partial ? partial + static_cast<int64_t>(omp_get_thread_num()) * dim * 2 : nullptr;
    float* pb = pw ? pw + dim : nullptr;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      const float* dyr = dy + r * dim;
      float* dxr = dx + r * dim;
      float mu = mean[r], rs = rstd[r];
      float sg = 0.f, sgx = 0.f;
#pragma omp simd reduction(+ : sg, sgx)
      for (int64_t j = 0; j < dim; ++j) {
        float g = dyr[j] * (w ? w[j] : 1.f);
        sg += g;
        sgx += g * (xr[j] - mu) * rs;
      }
      float inv = 1.f / static_cast<float>(dim);
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) {
        float xh = (xr[j] - mu) * rs;
        dxr[j] = rs * (dyr[j] * (w ? w[j] : 1.f) - sg * inv - xh * sgx * inv);
      }
      if (pw) {
#pragma omp simd
        for (int64_t j = 0; j < dim; ++j) {
          pw[j] += dyr[j] * (xr[j] - mu) * rs;
          pb[j] += dyr[j];
        }
      }
    }
  }
  if (need) {
    float* tmp = scratch_floats(1, static_cast<size_t>(dim) * 2);
    // Partials are interleaved [thread][w|b]; gather each half in thread order.
    for (int64_t j = 0; j < 2 * dim; ++j) tmp[j] = 0.f;
    for (int t = 0; t < nthreads; ++t)
      for (int64_t j = 0; j < 2 * dim; ++j) tmp[j] += partial[t * 2 * dim + j];
    if (dw) std::memcpy(dw, tmp, sizeof(float) * dim);
    if (db) std::memcpy(db, tmp + dim, sizeof(float) * dim);
  }
}

void l2norm_fwd(const float* x, float* y, float* rnorm, int64_t rows, int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < dim; ++j) ss += xr[j] * xr[j];
    float rn = 1.f / std::sqrt(ss + eps);
    rnorm[r] = rn;
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) y[r * dim + j] = xr[j] * rn;
  }
}

// dx = rnorm * (dy - y * (dy . y))
void l2norm_bwd(const float* y, const float* rnorm, const float* dy, float* dx, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * dim;
    const float* dyr = dy + r * dim;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < dim; ++j) dot += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) dx[r * dim + j] = rnorm[r] * (dyr[j] - yr[j] * dot);
  }
}

}  // namespace sw::kernels
