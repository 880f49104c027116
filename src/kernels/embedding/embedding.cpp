#include "kernels/embedding/embedding.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace sw::kernels {

void embedding_fwd(const float* table, const int32_t* ids, float* y, int64_t n, int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim > (1 << 15))
  for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * dim, table + static_cast<int64_t>(ids[i]) * dim, sizeof(float) * dim);
}

void embedding_fwd_bf16(const bf16* table, const int32_t* ids, float* y, int64_t n, int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const bf16* src = table + static_cast<int64_t>(ids[i]) * dim;
    for (int64_t j = 0; j < dim; ++j) y[i * dim + j] = bf16_to_f32(src[j]);
  }
}

void embedding_bwd(const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t dim) {
#pragma omp parallel if (n * dim > (1 << 15))
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t per = (dim + nt - 1) / nt;
    int64_t j0 = std::min(dim, t * per), j1 = std::min(dim, j0 + per);
    for (int64_t i = 0; i < n; ++i) {
      float* dst = dtable + static_cast<int64_t>(ids[i]) * dim;
      const float* src = dy + i * dim;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
  }
}

}  // namespace sw::kernels
