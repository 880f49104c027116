#include "kernels/scan/elementwise_scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/scan/blelloch.h"
#include "kernels/scan/scan_math.h"

namespace sw::kernels::scan {
namespace {

using detail::blelloch_scan;
using detail::exp_approx;

constexpr int64_t kBlock = 64;   // channels per work item: 4 vectors, enough for the loads to stream
constexpr int64_t kChunk = 256;  // tokens per Blelloch block

enum Slot : int { kSlotA = 0, kSlotB = 1 };

void fwd_item_sequential(const float* x, const float* g, const float* h0, float* o, float* ht, int64_t b,
                         int64_t d0, int64_t dw, int64_t T, int64_t D) {
  alignas(64) float h[kBlock];
  for (int64_t w = 0; w < dw; ++w) h[w] = h0 ? h0[b * D + d0 + w] : 0.f;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = (b * T + t) * D + d0;
    const float* xr = x + row;
    const float* gr = g + row;
    float* orow = o + row;
#pragma omp simd
    for (int64_t w = 0; w < dw; ++w) {
      h[w] = std::fma(exp_approx(gr[w]), h[w], xr[w]);
      orow[w] = h[w];
    }
  }
  if (ht) std::memcpy(ht + b * D + d0, h, dw * sizeof(float));
}

void fwd_item_blelloch(const float* x, const float* g, const float* h0, float* o, float* ht, int64_t b,
                       int64_t d0, int64_t dw, int64_t T, int64_t D) {
  float* ea = scratch_floats(kSlotA, kChunk * dw);
  float* eb = scratch_floats(kSlotB, kChunk * dw);
  alignas(64) float h[kBlock];
  for (int64_t w = 0; w < dw; ++w) h[w] = h0 ? h0[b * D + d0 + w] : 0.f;
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t len = std::min(kChunk, T - t0), L = detail::next_pow2(len);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t row = (b * T + t0 + i) * D + d0;
      float* ai = ea + i * dw;
      float* bi = eb + i * dw;
#pragma omp simd
      for (int64_t w = 0; w < dw; ++w) {
        ai[w] = exp_approx(g[row + w]);
        bi[w] = x[row + w];
      }
    }
    std::fill(ea + len * dw, ea + L * dw, 1.f);
    std::fill(eb + len * dw, eb + L * dw, 0.f);
    blelloch_scan(ea, eb, L, dw, h);
    for (int64_t i = 0; i < len; ++i)
      std::memcpy(o + (b * T + t0 + i) * D + d0, eb + i * dw, dw * sizeof(float));
  }
  if (ht) std::memcpy(ht + b * D + d0, h, dw * sizeof(float));
}

// h_{t-1} for token t of the block: the previous output row, or h0 (zeros when absent) at t = 0.
inline const float* prev_state(const float* o, const float* h0_row, const float* zeros, int64_t b, int64_t t,
                               int64_t T, int64_t D, int64_t d0) {
  if (t > 0) return o + (b * T + t - 1) * D + d0;
  return h0_row ? h0_row : zeros;
}

void bwd_item_sequential(const float* g, const float* o, const float* h0, const float* do_, const float* dht,
                         float* dx, float* dg, float* dh0, int64_t b, int64_t d0, int64_t dw, int64_t T,
                         int64_t D) {
  alignas(64) float dh[kBlock];
  alignas(64) float zeros[kBlock] = {};
  for (int64_t w = 0; w < dw; ++w) dh[w] = dht ? dht[b * D + d0 + w] : 0.f;
  const float* h0_row = h0 ? h0 + b * D + d0 : nullptr;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row = (b * T + t) * D + d0;
    const float* hp = prev_state(o, h0_row, zeros, b, t, T, D, d0);
#pragma omp simd
    for (int64_t w = 0; w < dw; ++w) {
      const float a = exp_approx(g[row + w]);
      dh[w] += do_[row + w];
      dx[row + w] = dh[w];
      dg[row + w] = dh[w] * a * hp[w];
      dh[w] *= a;
    }
  }
  if (dh0) std::memcpy(dh0 + b * D + d0, dh, dw * sizeof(float));
}

void bwd_item_blelloch(const float* g, const float* o, const float* h0, const float* do_, const float* dht,
                       float* dx, float* dg, float* dh0, int64_t b, int64_t d0, int64_t dw, int64_t T,
                       int64_t D) {
  float* ea = scratch_floats(kSlotA, kChunk * dw);
  float* eb = scratch_floats(kSlotB, kChunk * dw);
  alignas(64) float dh[kBlock];  // dL/dh_{t1-1} arriving from later chunks (decayed), dht at first
  alignas(64) float zeros[kBlock] = {};
  for (int64_t w = 0; w < dw; ++w) dh[w] = dht ? dht[b * D + d0 + w] : 0.f;
  const float* h0_row = h0 ? h0 + b * D + d0 : nullptr;
  const int64_t n_chunks = (T + kChunk - 1) / kChunk;
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk, len = std::min(kChunk, T - t0), L = detail::next_pow2(len);
    // Reverse-time elements: row r is token t = t0 + len - 1 - r with (exp(g_{t+1}), do_t); the
    // chunk's last token takes the carry undecayed.
    for (int64_t r = 0; r < len; ++r) {
      const int64_t t = t0 + len - 1 - r, row = (b * T + t) * D + d0;
      float* ar = ea + r * dw;
      float* br = eb + r * dw;
      if (r == 0) {
        std::fill(ar, ar + dw, 1.f);
      } else {
#pragma omp simd
        for (int64_t w = 0; w < dw; ++w) ar[w] = exp_approx(g[row + D + w]);
      }
      std::memcpy(br, do_ + row, dw * sizeof(float));
    }
    std::fill(ea + len * dw, ea + L * dw, 1.f);
    std::fill(eb + len * dw, eb + L * dw, 0.f);
    blelloch_scan(ea, eb, L, dw, dh);  // eb row r = dL/dh_t; dh = dL/dh_{t0}
    for (int64_t r = 0; r < len; ++r) {
      const int64_t t = t0 + len - 1 - r, row = (b * T + t) * D + d0;
      const float* hp = prev_state(o, h0_row, zeros, b, t, T, D, d0);
      const float* dh_t = eb + r * dw;  // dL/dh_t, total
#pragma omp simd
      for (int64_t w = 0; w < dw; ++w) {
        dx[row + w] = dh_t[w];
        dg[row + w] = dh_t[w] * exp_approx(g[row + w]) * hp[w];
      }
    }
    const int64_t row0 = (b * T + t0) * D + d0;
#pragma omp simd
    for (int64_t w = 0; w < dw; ++w) dh[w] *= exp_approx(g[row0 + w]);
  }
  if (dh0) std::memcpy(dh0 + b * D + d0, dh, dw * sizeof(float));
}

}  // namespace

void hgrn_fwd(const float* x, const float* g, const float* h0, float* o, float* ht, int64_t B, int64_t T,
              int64_t D, ScanForm form) {
  SW_DASSERT(x && g && o);
  const int64_t n_blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < B * n_blocks; ++item) {
    const int64_t b = item / n_blocks, d0 = (item % n_blocks) * kBlock, dw = std::min(kBlock, D - d0);
    if (form == ScanForm::blelloch)
      fwd_item_blelloch(x, g, h0, o, ht, b, d0, dw, T, D);
    else
      fwd_item_sequential(x, g, h0, o, ht, b, d0, dw, T, D);
  }
}

void hgrn_bwd(const float* g, const float* o, const float* h0, const float* do_, const float* dht, float* dx,
              float* dg, float* dh0, int64_t B, int64_t T, int64_t D, ScanForm form) {
  SW_DASSERT(g && o && do_ && dx && dg);
  const int64_t n_blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < B * n_blocks; ++item) {
    const int64_t b = item / n_blocks, d0 = (item % n_blocks) * kBlock, dw = std::min(kBlock, D - d0);
    if (form == ScanForm::blelloch)
      bwd_item_blelloch(g, o, h0, do_, dht, dx, dg, dh0, b, d0, dw, T, D);
    else
      bwd_item_sequential(g, o, h0, do_, dht, dx, dg, dh0, b, d0, dw, T, D);
  }
}

void hgrn_step(const float* x, const float* g, float* h, float* o, int64_t B, int64_t D) {
  const int64_t n = B * D;
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    h[i] = std::fma(exp_approx(g[i]), h[i], x[i]);
    o[i] = h[i];
  }
}

}  // namespace sw::kernels::scan
