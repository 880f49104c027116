#include "kernels/attention/mla_decode.h"

#include <algorithm>
#include <cmath>

#include "core/scratch.h"

namespace sw::kernels::attention {

void mla_absorbed_attention(const float* q_lat, const float* q_rope, const float* cache, const MlaDecodeDims& d,
                            float scale, float* out_lat) {
  const int64_t row = d.latent + d.rope;
  const int64_t q_offset = d.length - d.new_tokens;
#pragma omp parallel for collapse(3) schedule(dynamic) if (d.batch * d.new_tokens * d.heads * d.length > 4096)
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = 0; t < d.new_tokens; ++t)
      for (int64_t h = 0; h < d.heads; ++h) {
        const float* ql = q_lat + ((b * d.new_tokens + t) * d.heads + h) * d.latent;
        const float* qr = q_rope + ((b * d.new_tokens + t) * d.heads + h) * d.rope;
        float* o = out_lat + ((b * d.new_tokens + t) * d.heads + h) * d.latent;
        const float* rows = cache + b * d.capacity * row;
        int64_t visible = q_offset + t + 1;
        float* s = scratch_floats(0, static_cast<size_t>(visible));
        float mx = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          const float* c = rows + j * row;
          float acc = 0.f;
#pragma omp simd reduction(+ : acc)
          for (int64_t k = 0; k < d.latent; ++k) acc += ql[k] * c[k];
#pragma omp simd reduction(+ : acc)
          for (int64_t k = 0; k < d.rope; ++k) acc += qr[k] * c[d.latent + k];
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        float sum = 0.f;
        for (int64_t j = 0; j < visible; ++j) sum += s[j] = std::exp(s[j] - mx);
        float inv = 1.f / sum;
        for (int64_t k = 0; k < d.latent; ++k) o[k] = 0.f;
        for (int64_t j = 0; j < visible; ++j) {
          const float* c = rows + j * row;
          float p = s[j] * inv;
#pragma omp simd
          for (int64_t k = 0; k < d.latent; ++k) o[k] += p * c[k];
        }
      }
}

}  // namespace sw::kernels::attention
