#include "kernels/rope/rope.h"

#include <cmath>

#include "core/scratch.h"

namespace sw::kernels {
namespace {

// sign = +1 rotates forward, -1 applies the inverse (the backward of a rotation is its transpose).
void rope_apply(const float* x, float* y, const int32_t* positions, int64_t batch, int64_t seq, int64_t heads,
                int64_t head_dim, int64_t rotary_dim, float base, float sign) {
  int64_t half = rotary_dim / 2;
  // inv_freq in double: base^(-2i/R) for large bases loses digits in float; it is computed once.
  float* inv_freq = scratch_floats(0, static_cast<size_t>(half) + 1);
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = static_cast<float>(std::pow(static_cast<double>(base), -2.0 * i / static_cast<double>(rotary_dim)));
#pragma omp parallel for collapse(2) schedule(static) if (batch * seq * heads * head_dim > (1 << 14))
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      float cs[512], sn[512];  // half <= 512 (head_dim <= 1024), checked by the op
      double pos = positions[t];
      for (int64_t i = 0; i < half; ++i) {
        double ang = pos * inv_freq[i];
        cs[i] = static_cast<float>(std::cos(ang));
        sn[i] = sign * static_cast<float>(std::sin(ang));
      }
      for (int64_t h = 0; h < heads; ++h) {
        const float* xr = x + ((b * seq + t) * heads + h) * head_dim;
        float* yr = y + ((b * seq + t) * heads + h) * head_dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          float x1 = xr[i], x2 = xr[i + half];
          yr[i] = x1 * cs[i] - x2 * sn[i];
          yr[i + half] = x2 * cs[i] + x1 * sn[i];
        }
        if (y != x)
          for (int64_t i = rotary_dim; i < head_dim; ++i) yr[i] = xr[i];
      }
    }
}

}  // namespace

void rope_fwd(const float* x, float* y, const int32_t* positions, int64_t batch, int64_t seq, int64_t heads,
              int64_t head_dim, int64_t rotary_dim, float base) {
  rope_apply(x, y, positions, batch, seq, heads, head_dim, rotary_dim, base, 1.f);
}

void rope_bwd(const float* dy, float* dx, const int32_t* positions, int64_t batch, int64_t seq, int64_t heads,
              int64_t head_dim, int64_t rotary_dim, float base) {
  rope_apply(dy, dx, positions, batch, seq, heads, head_dim, rotary_dim, base, -1.f);
}

}  // namespace sw::kernels
