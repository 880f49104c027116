#include "kernels/conv/causal_conv1d.h"

#include <algorithm>
#include <cstring>

#include "core/scratch.h"

namespace sw::kernels {
namespace {
constexpr int64_t kChannelBlock = 64;  // channels per work item: contiguous, vectorisable
}

void causal_conv1d_fwd(const float* x, const float* w, const float* bias, const float* state0, float* y,
                       float* state_out, int64_t batch, int64_t seq, int64_t channels, int64_t width) {
  int64_t hist = width - 1;
  int64_t nblk = (channels + kChannelBlock - 1) / kChannelBlock;
  // The new state is computed before y is written only from inputs, so state_out may alias state0;
  // stage it to avoid overwriting history still being read.
  float* new_state = state_out ? scratch_floats(0, static_cast<size_t>(batch * hist * channels) + 1) : nullptr;
#pragma omp parallel for collapse(2) schedule(static) if (batch * seq * channels > (1 << 14))
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t blk = 0; blk < nblk; ++blk) {
      int64_t c0 = blk * kChannelBlock, c1 = std::min(channels, c0 + kChannelBlock);
      // xx row i (i in [0, hist + seq)): state row i if i < hist, else x row i - hist.
      auto row = [&](int64_t i) -> const float* {
        if (i < hist) return state0 ? state0 + (b * hist + i) * channels : nullptr;
        return x + (b * seq + i - hist) * channels;
      };
      for (int64_t t = 0; t < seq; ++t) {
        float* yr = y + (b * seq + t) * channels;
        for (int64_t c = c0; c < c1; ++c) yr[c] = bias ? bias[c] : 0.f;
        for (int64_t j = 0; j < width; ++j) {
          const float* xr = row(t + j);
          if (!xr) continue;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) yr[c] += w[c * width + j] * xr[c];
        }
      }
      if (new_state)
        for (int64_t i = 0; i < hist; ++i) {
          const float* src = row(seq + i);
          float* dst = new_state + (b * hist + i) * channels;
          for (int64_t c = c0; c < c1; ++c) dst[c] = src ? src[c] : 0.f;
        }
    }
  if (state_out) std::memcpy(state_out, new_state, sizeof(float) * batch * hist * channels);
}

void causal_conv1d_bwd(const float* x, const float* w, const float* state0, const float* dy, const float* dstate_out,
                       float* dx, float* dw, float* dbias, float* dstate0, int64_t batch, int64_t seq,
                       int64_t channels, int64_t width) {
  int64_t hist = width - 1;
  int64_t nblk = (channels + kChannelBlock - 1) / kChannelBlock;
  // Parallel over channel blocks only: dw and dbias are sums over the batch, owned per channel.
#pragma omp parallel for schedule(static) if (batch * seq * channels > (1 << 14))
  for (int64_t blk = 0; blk < nblk; ++blk) {
    int64_t c0 = blk * kChannelBlock, c1 = std::min(channels, c0 + kChannelBlock);
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t j = 0; j < width; ++j) dw[c * width + j] = 0.f;
      if (dbias) dbias[c] = 0.f;
    }
    for (int64_t b = 0; b < batch; ++b) {
      auto xrow = [&](int64_t i) -> const float* {
        if (i < hist) return state0 ? state0 + (b * hist + i) * channels : nullptr;
        return x + (b * seq + i - hist) * channels;
      };
      // d xx row i = sum_j w[c,j] dy[i - j] (+ dstate_out if row i is in the final state).
      for (int64_t i = 0; i < hist + seq; ++i) {
        float* dst = i < hist ? (dstate0 ? dstate0 + (b * hist + i) * channels : nullptr)
                              : dx + (b * seq + i - hist) * channels;
        if (!dst) continue;
        for (int64_t c = c0; c < c1; ++c) dst[c] = 0.f;
        for (int64_t j = 0; j < width; ++j) {
          int64_t t = i - j;
          if (t < 0 || t >= seq) continue;
          const float* dyr = dy + (b * seq + t) * channels;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) dst[c] += w[c * width + j] * dyr[c];
        }
        int64_t s = i - seq;  // index into the final state (rows seq .. seq + hist - 1 of xx)
        if (dstate_out && s >= 0) {
          const float* ds = dstate_out + (b * hist + s) * channels;
          for (int64_t c = c0; c < c1; ++c) dst[c] += ds[c];
        }
      }
      for (int64_t t = 0; t < seq; ++t) {
        const float* dyr = dy + (b * seq + t) * channels;
        for (int64_t j = 0; j < width; ++j) {
          const float* xr = xrow(t + j);
          if (!xr) continue;
          for (int64_t c = c0; c < c1; ++c) dw[c * width + j] += dyr[c] * xr[c];
        }
        if (dbias)
          for (int64_t c = c0; c < c1; ++c) dbias[c] += dyr[c];
      }
    }
  }
}

}  // namespace sw::kernels
