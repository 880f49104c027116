#include "kernels/scan/selective_scan.h"

#include <omp.h>

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
using detail::next_pow2;

// A work item is one batch row and a block of kLanes consecutive channels; inside it the state is
// held transposed as [N][kLanes] so that every update is one 16-wide vector per state index.
constexpr int64_t kLanes = 16;
// Tokens per Blelloch block and per backward recompute chunk: a power of two with a chunk's
// [chunk][N][kLanes] buffers at 64 KiB each, so the backward's working set stays in L2.
constexpr int64_t kMaxChunk = 64;
inline int64_t chunk_len(int64_t N) {
  int64_t c = kMaxChunk;
  while (c > 8 && c * N * kLanes > 16384) c /= 2;
  return c;
}
constexpr int kMaxThreads = 256;      // bound on OpenMP threads for the per-thread dB/dC partials

// Scratch slots (per thread). kSlotPartial is taken by the backward's parallel region itself.
enum Slot : int { kSlotSmall = 0, kSlotH = 1, kSlotChunkA = 2, kSlotChunkB = 3, kSlotBound = 4,
                  kSlotChunkC = 5, kSlotChunkD = 6, kSlotPartial = 7 };

inline int64_t num_blocks(int64_t D) { return (D + kLanes - 1) / kLanes; }

// Sum of the kLanes values of p as a balanced tree. (GCC compiles an `omp simd reduction(+)` over
// exactly one vector of lanes into a chain of 16 dependent scalar adds, which dominated the backward.)
[[gnu::always_inline]] inline float lane_sum(const float* p) {
  float a[kLanes / 2];
  for (int64_t i = 0; i < kLanes / 2; ++i) a[i] = p[i] + p[i + kLanes / 2];
  for (int64_t i = 0; i < kLanes / 4; ++i) a[i] += a[i + kLanes / 4];
  return (a[0] + a[2]) + (a[1] + a[3]);
}

// dst[l] = src[l] for l < dw, 0 beyond (a null src gives zeros).
inline void load_lanes(float* dst, const float* src, int64_t dw) {
  if (src && dw == kLanes) {
    std::memcpy(dst, src, kLanes * sizeof(float));
    return;
  }
  for (int64_t l = 0; l < kLanes; ++l) dst[l] = (src && l < dw) ? src[l] : 0.f;
}

inline void store_lanes(float* dst, const float* src, int64_t dw) {
  std::memcpy(dst, src, dw * sizeof(float));
}

// At[n][l] = A[d0 + l, n]; padded lanes get A = 0 (decay 1, and their input is 0).
void load_A_block(const float* A, int64_t d0, int64_t dw, int64_t N, float* At) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < kLanes; ++l) At[n * kLanes + l] = l < dw ? A[(d0 + l) * N + n] : 0.f;
}

// h[n][l] = state[b, d0 + l, n] (zeros for a null state).
void load_state(const float* state, int64_t b, int64_t d0, int64_t dw, int64_t D, int64_t N, float* h) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < kLanes; ++l)
      h[n * kLanes + l] = (state && l < dw) ? state[(b * D + d0 + l) * N + n] : 0.f;
}

void store_state(const float* h, int64_t b, int64_t d0, int64_t dw, int64_t D, int64_t N, float* state) {
  for (int64_t l = 0; l < dw; ++l)
    for (int64_t n = 0; n < N; ++n) state[(b * D + d0 + l) * N + n] = h[n * kLanes + l];
}

// Everything one token needs per lane, before the loop over state indices.
struct TokenLanes {
  alignas(64) float u[kLanes];
  alignas(64) float dt[kLanes];      // discretisation step after bias and softplus
  alignas(64) float dtu[kLanes];     // dt * u
  alignas(64) float dt_grad[kLanes]; // d dt / d delta: sigmoid(delta + bias) or 1
};

struct BlockParams {
  alignas(64) float bias[kLanes];
  alignas(64) float skip[kLanes];
};

// Fills tk[i] for the len tokens t0 + i of batch row b. The transcendental work (softplus, its
// derivative) is a long dependency chain on a single vector per token, so it runs as a batch of
// independent tokens rather than one token at a time between scan steps.
void load_tokens(const SelectiveScanInputs& in, const BlockParams& bp, int64_t b, int64_t t0, int64_t len,
                 int64_t d0, int64_t dw, bool want_grad, TokenLanes* tk) {
  for (int64_t i = 0; i < len; ++i) {
    const int64_t row = (b * in.T + t0 + i) * in.D + d0;
    load_lanes(tk[i].u, in.u + row, dw);
    load_lanes(tk[i].dt, in.delta + row, dw);  // raw delta until the loop below
  }
  for (int64_t i = 0; i < len; ++i) {
    TokenLanes& k = tk[i];
    if (in.delta_softplus) {
      if (want_grad) {
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) {
          const float x = k.dt[l] + bp.bias[l];
          k.dt_grad[l] = x > 20.f ? 1.f : detail::sigmoid_approx(x);
        }
      }
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) k.dt[l] = detail::softplus_approx(k.dt[l] + bp.bias[l]);
    } else {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        k.dt[l] += bp.bias[l];
        k.dt_grad[l] = 1.f;
      }
    }
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) k.dtu[l] = k.dt[l] * k.u[l];
  }
}

void load_block_params(const SelectiveScanInputs& in, int64_t d0, int64_t dw, BlockParams& bp) {
  load_lanes(bp.bias, in.delta_bias ? in.delta_bias + d0 : nullptr, dw);
  load_lanes(bp.skip, in.Dskip ? in.Dskip + d0 : nullptr, dw);
}

// Scan elements of one token: a[n][l] = exp(dt * A), b[n][l] = dt * u * Bm_t[n].
inline void token_elements(const TokenLanes& tk, const float* At, const float* Bt, int64_t N, float* a,
                           float* b) {
  for (int64_t n = 0; n < N; ++n) {
    const float bn = Bt[n];
    const float* an = At + n * kLanes;
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      a[n * kLanes + l] = exp_approx(tk.dt[l] * an[l]);
      b[n * kLanes + l] = tk.dtu[l] * bn;
    }
  }
}

// y[l] = Dskip * u + sum_n Ct[n] * h[n][l]  (the output before the gate).
inline void token_readout(const TokenLanes& tk, const BlockParams& bp, const float* h, const float* Ct,
                          int64_t N, float* y) {
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) y[l] = bp.skip[l] * tk.u[l];
  for (int64_t n = 0; n < N; ++n) {
    const float cn = Ct[n];
    const float* hn = h + n * kLanes;
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) y[l] = std::fma(hn[l], cn, y[l]);
  }
}

// out = y * silu(z) when gated.
inline void token_gate(const SelectiveScanInputs& in, int64_t row, int64_t dw, float* y) {
  if (!in.z) return;
  alignas(64) float zz[kLanes];
  load_lanes(zz, in.z + row, dw);
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) y[l] *= zz[l] * detail::sigmoid_approx(zz[l]);
}

// ---------------------------------------------------------------------------------------------
// Forward

// Tokens whose per-lane preprocessing (softplus) and gating run as one batch: one token's softplus
// is a ~150-cycle dependency chain on a single vector, which a batch turns into independent work.
constexpr int64_t kTokenBatch = 16;

// Channel blocks per forward work item (up to): consecutive blocks share every token's rows, so a
// row's cache lines and page translation serve several blocks instead of one. Rows are D floats
// apart, so with one 64-byte block per item almost every load touches a new page.
constexpr int64_t kMaxGroups = 4;

// Blocks [blk0, blk0 + n_groups) of batch row b.
void fwd_item_sequential(const SelectiveScanInputs& in, int64_t b, int64_t blk0, int64_t n_groups, float* out,
                         float* ht) {
  const int64_t T = in.T, D = in.D, N = in.N, W = N * kLanes;
  float* At = scratch_floats(kSlotSmall, n_groups * W);
  float* h = scratch_floats(kSlotH, n_groups * W);
  BlockParams bp[kMaxGroups];
  int64_t d0[kMaxGroups], dw[kMaxGroups];
  for (int64_t g = 0; g < n_groups; ++g) {
    d0[g] = (blk0 + g) * kLanes;
    dw[g] = std::min(kLanes, D - d0[g]);
    load_A_block(in.A, d0[g], dw[g], N, At + g * W);
    load_state(in.h0, b, d0[g], dw[g], D, N, h + g * W);
    load_block_params(in, d0[g], dw[g], bp[g]);
  }
  TokenLanes tk[kMaxGroups][kTokenBatch];
  alignas(64) float y[kMaxGroups][kTokenBatch][kLanes];
  for (int64_t t0 = 0; t0 < T; t0 += kTokenBatch) {
    const int64_t len = std::min(kTokenBatch, T - t0);
    for (int64_t g = 0; g < n_groups; ++g) load_tokens(in, bp[g], b, t0, len, d0[g], dw[g], false, tk[g]);
    for (int64_t g = 0; g < n_groups; ++g)
      for (int64_t i = 0; i < len; ++i) {
        const float* Bt = in.Bm + (b * T + t0 + i) * N;
        const float* Ct = in.Cm + (b * T + t0 + i) * N;
        const TokenLanes& k = tk[g][i];
        float* yi = y[g][i];
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) yi[l] = bp[g].skip[l] * k.u[l];
        for (int64_t n = 0; n < N; ++n) {
          const float bn = Bt[n], cn = Ct[n];
          const float* an = At + g * W + n * kLanes;
          float* hn = h + g * W + n * kLanes;
#pragma omp simd
          for (int64_t l = 0; l < kLanes; ++l) {
            const float hv = std::fma(exp_approx(k.dt[l] * an[l]), hn[l], k.dtu[l] * bn);
            hn[l] = hv;
            yi[l] = std::fma(hv, cn, yi[l]);
          }
        }
      }
    for (int64_t i = 0; i < len; ++i)
      for (int64_t g = 0; g < n_groups; ++g) {
        const int64_t row = (b * T + t0 + i) * D + d0[g];
        token_gate(in, row, dw[g], y[g][i]);
        store_lanes(out + row, y[g][i], dw[g]);
      }
  }
  if (ht)
    for (int64_t g = 0; g < n_groups; ++g) store_state(h + g * W, b, d0[g], dw[g], D, N, ht);
}

void fwd_item_blelloch(const SelectiveScanInputs& in, int64_t b, int64_t d0, int64_t dw, float* out,
                       float* ht) {
  const int64_t T = in.T, D = in.D, N = in.N, W = N * kLanes;
  float* At = scratch_floats(kSlotSmall, W);
  float* h = scratch_floats(kSlotH, W);
  const int64_t chunk = chunk_len(N);
  float* ea = scratch_floats(kSlotChunkA, chunk * W);
  float* eb = scratch_floats(kSlotChunkB, chunk * W);
  load_A_block(in.A, d0, dw, N, At);
  load_state(in.h0, b, d0, dw, D, N, h);
  BlockParams bp;
  load_block_params(in, d0, dw, bp);
  TokenLanes tk[kMaxChunk];
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t len = std::min(chunk, T - t0), L = next_pow2(len);
    load_tokens(in, bp, b, t0, len, d0, dw, false, tk);
    for (int64_t i = 0; i < len; ++i)
      token_elements(tk[i], At, in.Bm + (b * T + t0 + i) * N, N, ea + i * W, eb + i * W);
    std::fill(ea + len * W, ea + L * W, 1.f);  // identity elements pad to a power of two
    std::fill(eb + len * W, eb + L * W, 0.f);
    blelloch_scan(ea, eb, L, W, h);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t row = (b * T + t0 + i) * D + d0;
      alignas(64) float y[kLanes];
      token_readout(tk[i], bp, eb + i * W, in.Cm + (b * T + t0 + i) * N, N, y);
      token_gate(in, row, dw, y);
      store_lanes(out + row, y, dw);
    }
  }
  if (ht) store_state(h, b, d0, dw, D, N, ht);
}

// ---------------------------------------------------------------------------------------------
// Backward

// Per-block accumulators of the parameter gradients (summed over batch and time).
struct BlockGradAcc {
  float* dA;  // [N][kLanes]
  alignas(64) float dskip[kLanes];
  alignas(64) float dbias[kLanes];
};

// The upstream gradient at the pre-gate output y of one token, plus the gate and skip gradients.
// y (pre-gate, from the state h_t) is recomputed here. Also adds sum_l dy * h_t into dC_row.
inline void token_output_grads(const SelectiveScanInputs& in, const BlockParams& bp, const TokenLanes& tk,
                               const float* h, const float* Ct, const float* dout, int64_t row, int64_t dw,
                               const SelectiveScanGrads& g, BlockGradAcc& acc, float* dy, float* du_l,
                               float* dC_row) {
  const int64_t N = in.N;
  load_lanes(dy, dout + row, dw);
  if (in.z) {
    alignas(64) float y[kLanes], zz[kLanes], dz[kLanes];
    token_readout(tk, bp, h, Ct, N, y);
    load_lanes(zz, in.z + row, dw);
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const float s = detail::sigmoid_approx(zz[l]);
      dz[l] = dy[l] * y[l] * s * (1.f + zz[l] * (1.f - s));
      dy[l] *= zz[l] * s;
    }
    if (g.dz) store_lanes(g.dz + row, dz, dw);
  }
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    acc.dskip[l] = std::fma(dy[l], tk.u[l], acc.dskip[l]);
    du_l[l] = dy[l] * bp.skip[l];
  }
  for (int64_t n = 0; n < N; ++n) {
    const float* hn = h + n * kLanes;
    alignas(64) float prod[kLanes];
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) prod[l] = dy[l] * hn[l];
    dC_row[n] += lane_sum(prod);
  }
}

// Gradients through token t's recurrence step, given gt = dL/dh_t (total, [N][kLanes]), the previous
// state, and the decay a_t. Adds into dA, d dt, du and dB_row (summed over lanes).
inline void token_step_grads(const TokenLanes& tk, const float* At, const float* Bt, const float* gt,
                             const float* hprev, const float* a, int64_t N, BlockGradAcc& acc, float* ddt,
                             float* du_l, float* dB_row) {
  for (int64_t n = 0; n < N; ++n) {
    const float bn = Bt[n];
    const float* gn = gt + n * kLanes;
    const float* hp = hprev + n * kLanes;
    const float* an = a + n * kLanes;
    const float* Ann = At + n * kLanes;
    float* dAn = acc.dA + n * kLanes;
    alignas(64) float prod[kLanes];
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const float dlog = gn[l] * hp[l] * an[l];  // dL/d(dt * A)
      dAn[l] = std::fma(dlog, tk.dt[l], dAn[l]);
      ddt[l] += dlog * Ann[l] + gn[l] * bn * tk.u[l];
      du_l[l] = std::fma(gn[l] * bn, tk.dt[l], du_l[l]);
      prod[l] = gn[l] * tk.dtu[l];
    }
    dB_row[n] += lane_sum(prod);
  }
}

// Writes du, ddelta of a token and accumulates the bias gradient.
inline void token_store_input_grads(const TokenLanes& tk, const float* ddt, const float* du_l, int64_t row,
                                    int64_t dw, const SelectiveScanGrads& g, BlockGradAcc& acc) {
  alignas(64) float draw[kLanes];
#pragma omp simd
  for (int64_t l = 0; l < kLanes; ++l) {
    draw[l] = ddt[l] * tk.dt_grad[l];
    acc.dbias[l] += draw[l];
  }
  if (g.ddelta) store_lanes(g.ddelta + row, draw, dw);
  if (g.du) store_lanes(g.du + row, du_l, dw);
}

// Forward pass over the whole sequence storing only the state entering each chunk: bound[c] ([N][kLanes]).
// ea, eb: [chunk_len(N)][N][kLanes] work space for the Blelloch form.
void chunk_boundaries(const SelectiveScanInputs& in, const BlockParams& bp, const float* At, int64_t b,
                      int64_t d0, int64_t dw, ScanForm form, float* h, float* bound, float* ea, float* eb) {
  const int64_t T = in.T, N = in.N, W = N * kLanes, chunk = chunk_len(N);
  TokenLanes tk[kMaxChunk];
  if (form == ScanForm::blelloch) {
    for (int64_t t0 = 0, c = 0; t0 < T; t0 += chunk, ++c) {
      std::memcpy(bound + c * W, h, W * sizeof(float));
      const int64_t len = std::min(chunk, T - t0), L = next_pow2(len);
      load_tokens(in, bp, b, t0, len, d0, dw, false, tk);
      for (int64_t i = 0; i < len; ++i)
        token_elements(tk[i], At, in.Bm + (b * T + t0 + i) * N, N, ea + i * W, eb + i * W);
      std::fill(ea + len * W, ea + L * W, 1.f);
      std::fill(eb + len * W, eb + L * W, 0.f);
      blelloch_scan(ea, eb, L, W, h);
    }
    return;
  }
  for (int64_t t0 = 0, c = 0; t0 < T; t0 += chunk, ++c) {
    std::memcpy(bound + c * W, h, W * sizeof(float));
    const int64_t len = std::min(chunk, T - t0);
    load_tokens(in, bp, b, t0, len, d0, dw, false, tk);
    for (int64_t i = 0; i < len; ++i) {
      const float* Bt = in.Bm + (b * T + t0 + i) * N;
      for (int64_t n = 0; n < N; ++n) {
        const float bn = Bt[n];
        const float* an = At + n * kLanes;
        float* hn = h + n * kLanes;
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l)
          hn[l] = std::fma(exp_approx(tk[i].dt[l] * an[l]), hn[l], tk[i].dtu[l] * bn);
      }
    }
  }
}

// One (batch, channel block) of the backward. dB_part/dC_part: this thread's [T, N] partial sums.
void bwd_item(const SelectiveScanInputs& in, const float* dout, const float* dht, const SelectiveScanGrads& g,
              ScanForm form, int64_t b, int64_t d0, int64_t dw, float* dB_part, float* dC_part) {
  const int64_t T = in.T, D = in.D, N = in.N, W = N * kLanes;
  const int64_t chunk = chunk_len(N);
  const int64_t n_chunks = (T + chunk - 1) / chunk;
  float* small = scratch_floats(kSlotSmall, 4 * W);
  float* At = small;
  float* h = small + W;   // running state (boundary pass), then the reverse scan's carry
  float* dh = small + 2 * W;
  BlockGradAcc acc;
  acc.dA = small + 3 * W;
  float* hbuf = scratch_floats(kSlotChunkA, chunk * W);    // h_t for the chunk's tokens
  float* abuf = scratch_floats(kSlotChunkB, chunk * W);    // a_t for the chunk's tokens
  float* bound = scratch_floats(kSlotBound, std::max<int64_t>(n_chunks, 1) * W);
  // Blelloch form only: a scan work copy, the reverse scan's g_t, and dy_t per token of the chunk.
  float* ework = form == ScanForm::blelloch ? scratch_floats(kSlotChunkC, chunk * W) : nullptr;
  float* gbuf = form == ScanForm::blelloch ? scratch_floats(kSlotChunkD, chunk * W) : nullptr;
  float* dybuf = form == ScanForm::blelloch ? scratch_floats(kSlotH, chunk * kLanes) : nullptr;
  load_A_block(in.A, d0, dw, N, At);
  BlockParams bp;
  load_block_params(in, d0, dw, bp);
  std::fill(acc.dA, acc.dA + W, 0.f);
  std::fill(acc.dskip, acc.dskip + kLanes, 0.f);
  std::fill(acc.dbias, acc.dbias + kLanes, 0.f);

  load_state(in.h0, b, d0, dw, D, N, h);
  chunk_boundaries(in, bp, At, b, d0, dw, form, h, bound, hbuf, abuf);
  load_state(dht, b, d0, dw, D, N, dh);  // dL/dh_{T-1} arriving from the final state

  TokenLanes tk[kMaxChunk];
  alignas(64) float dy[kLanes], du_l[kLanes], ddt[kLanes];
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * chunk, len = std::min(chunk, T - t0);
    const float* hstart = bound + c * W;
    load_tokens(in, bp, b, t0, len, d0, dw, true, tk);
    if (form == ScanForm::sequential) {
      // Recompute the chunk's states and decays from its boundary state.
      const float* hp = hstart;
      for (int64_t i = 0; i < len; ++i) {
        const TokenLanes& k = tk[i];
        const float* Bt = in.Bm + (b * T + t0 + i) * N;
        float* hi = hbuf + i * W;
        float* ai = abuf + i * W;
        for (int64_t n = 0; n < N; ++n) {
          const float bn = Bt[n];
          const float* an = At + n * kLanes;
#pragma omp simd
          for (int64_t l = 0; l < kLanes; ++l) {
            const float a = exp_approx(k.dt[l] * an[l]);
            ai[n * kLanes + l] = a;
            hi[n * kLanes + l] = std::fma(a, hp[n * kLanes + l], k.dtu[l] * bn);
          }
        }
        hp = hi;
      }
      // Reverse token loop: dh holds dL/dh_t from the future; add the output's share, then step back.
      for (int64_t i = len - 1; i >= 0; --i) {
        const int64_t t = t0 + i, row = (b * T + t) * D + d0;
        const float* Bt = in.Bm + (b * T + t) * N;
        const float* Ct = in.Cm + (b * T + t) * N;
        token_output_grads(in, bp, tk[i], hbuf + i * W, Ct, dout, row, dw, g, acc, dy, du_l, dC_part + t * N);
        for (int64_t n = 0; n < N; ++n) {
          const float cn = Ct[n];
          float* dhn = dh + n * kLanes;
#pragma omp simd
          for (int64_t l = 0; l < kLanes; ++l) dhn[l] = std::fma(dy[l], cn, dhn[l]);
        }
        std::fill(ddt, ddt + kLanes, 0.f);
        const float* hprev = i > 0 ? hbuf + (i - 1) * W : hstart;
        token_step_grads(tk[i], At, Bt, dh, hprev, abuf + i * W, N, acc, ddt, du_l, dB_part + t * N);
        token_store_input_grads(tk[i], ddt, du_l, row, dw, g, acc);
        const float* ai = abuf + i * W;
#pragma omp simd
        for (int64_t w = 0; w < W; ++w) dh[w] *= ai[w];
      }
    } else {
      // Parallel form: forward scan of the chunk from its boundary, then a reverse scan for
      // g_t = dL/dh_t = a_{t+1} g_{t+1} + Cm_t * dy_t whose carry (dh) is dL/dh_{t1-1} from later
      // chunks (dht for the last one).
      const int64_t L = next_pow2(len);
      for (int64_t i = 0; i < len; ++i)
        token_elements(tk[i], At, in.Bm + (b * T + t0 + i) * N, N, abuf + i * W, hbuf + i * W);
      std::fill(abuf + len * W, abuf + L * W, 1.f);
      std::fill(hbuf + len * W, hbuf + L * W, 0.f);
      std::memcpy(ework, abuf, L * W * sizeof(float));
      std::memcpy(h, hstart, W * sizeof(float));  // h is free after the boundary pass
      blelloch_scan(ework, hbuf, L, W, h);
      // Output-side gradients per token (dy, dz, dskip, dC); du_l is finished in the step loop below.
      for (int64_t i = 0; i < len; ++i) {
        const int64_t t = t0 + i, row = (b * T + t) * D + d0;
        token_output_grads(in, bp, tk[i], hbuf + i * W, in.Cm + (b * T + t) * N, dout, row, dw, g, acc,
                           dybuf + i * kLanes, du_l, dC_part + t * N);
      }
      // Reverse elements: row r is token i = len-1-r with (a_{t+1}, Cm_t * dy_t).
      for (int64_t r = 0; r < len; ++r) {
        const int64_t i = len - 1 - r, t = t0 + i;
        float* ra = ework + r * W;
        float* rb = gbuf + r * W;
        // The chunk's last token takes the carry dL/dh_{t1-1} (already decayed by a_{t1}) undecayed.
        if (i + 1 < len)
          std::memcpy(ra, abuf + (i + 1) * W, W * sizeof(float));
        else
          std::fill(ra, ra + W, 1.f);
        const float* Ct = in.Cm + (b * T + t) * N;
        const float* dyi = dybuf + i * kLanes;
        for (int64_t n = 0; n < N; ++n) {
#pragma omp simd
          for (int64_t l = 0; l < kLanes; ++l) rb[n * kLanes + l] = dyi[l] * Ct[n];
        }
      }
      std::fill(ework + len * W, ework + L * W, 1.f);
      std::fill(gbuf + len * W, gbuf + L * W, 0.f);
      blelloch_scan(ework, gbuf, L, W, dh);  // dh becomes g_{t0}
      for (int64_t i = 0; i < len; ++i) {
        const int64_t t = t0 + i, row = (b * T + t) * D + d0;
        const float* dyi = dybuf + i * kLanes;
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) du_l[l] = dyi[l] * bp.skip[l];
        std::fill(ddt, ddt + kLanes, 0.f);
        const float* hprev = i > 0 ? hbuf + (i - 1) * W : hstart;
        token_step_grads(tk[i], At, in.Bm + (b * T + t) * N, gbuf + (len - 1 - i) * W, hprev, abuf + i * W, N,
                         acc, ddt, du_l, dB_part + t * N);
        token_store_input_grads(tk[i], ddt, du_l, row, dw, g, acc);
      }
      // Hand dL/dh_{t0-1} = a_{t0} g_{t0} to the previous chunk.
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) dh[w] *= abuf[w];
    }
  }
  if (g.dh0) store_state(dh, b, d0, dw, D, N, g.dh0);
  if (g.dA)
    for (int64_t l = 0; l < dw; ++l)
      for (int64_t n = 0; n < N; ++n) g.dA[(d0 + l) * N + n] += acc.dA[n * kLanes + l];
  for (int64_t l = 0; l < dw; ++l) {
    if (g.dDskip) g.dDskip[d0 + l] += acc.dskip[l];
    if (g.ddelta_bias) g.ddelta_bias[d0 + l] += acc.dbias[l];
  }
}

}  // namespace

void selective_scan_fwd(const SelectiveScanInputs& in, float* out, float* ht, ScanForm form) {
  SW_DASSERT(in.N > 0 && in.u && in.delta && in.A && in.Bm && in.Cm);
  const int64_t n_blocks = num_blocks(in.D);
  if (form == ScanForm::blelloch) {
#pragma omp parallel for schedule(static)
    for (int64_t item = 0; item < in.B * n_blocks; ++item) {
      const int64_t b = item / n_blocks, d0 = (item % n_blocks) * kLanes;
      fwd_item_blelloch(in, b, d0, std::min(kLanes, in.D - d0), out, ht);
    }
    return;
  }
  // Group blocks only while at least 4 items per thread remain, so both cores stay busy.
  const int64_t per_thread = in.B * n_blocks / (4 * omp_get_max_threads());
  const int64_t groups = std::clamp<int64_t>(per_thread, 1, kMaxGroups);
  const int64_t items_per_row = (n_blocks + groups - 1) / groups;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < in.B * items_per_row; ++item) {
    const int64_t b = item / items_per_row, blk0 = (item % items_per_row) * groups;
    fwd_item_sequential(in, b, blk0, std::min(groups, n_blocks - blk0), out, ht);
  }
}

void selective_scan_bwd(const SelectiveScanInputs& in, const float* dout, const float* dht,
                        const SelectiveScanGrads& grads, ScanForm form) {
  SW_DASSERT(in.N > 0 && dout);
  SW_DASSERT(!(grads.dz && !in.z));
  const int64_t B = in.B, T = in.T, D = in.D, N = in.N;
  const int64_t n_blocks = num_blocks(D);
  if (grads.dA) std::fill(grads.dA, grads.dA + D * N, 0.f);
  if (grads.dDskip) std::fill(grads.dDskip, grads.dDskip + D, 0.f);
  if (grads.ddelta_bias) std::fill(grads.ddelta_bias, grads.ddelta_bias + D, 0.f);
  float* partials[kMaxThreads];
  // Bm and Cm are shared by all channels, so their gradients are sums over channel blocks: each thread
  // sums its (statically assigned, hence deterministic) blocks into a private [T, N] pair, and the
  // pairs are added in thread order. Batch rows go one after another so dA/dDskip/dbias, owned by the
  // channel block, never race.
#pragma omp parallel
  {
    const int tid = omp_get_thread_num(), n_threads = omp_get_num_threads();
    SW_ASSERT(n_threads <= kMaxThreads);
    float* part = scratch_floats(kSlotPartial, std::max<int64_t>(2 * T * N, 1));
    partials[tid] = part;
    for (int64_t b = 0; b < B; ++b) {
      std::fill(part, part + 2 * T * N, 0.f);
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int64_t d0 = blk * kLanes, dw = std::min(kLanes, D - d0);
        bwd_item(in, dout, dht, grads, form, b, d0, dw, part, part + T * N);
      }
#pragma omp for schedule(static)
      for (int64_t tn = 0; tn < T * N; ++tn) {
        float sb = 0.f, sc = 0.f;
        for (int k = 0; k < n_threads; ++k) {
          sb += partials[k][tn];
          sc += partials[k][T * N + tn];
        }
        if (grads.dBm) grads.dBm[b * T * N + tn] = sb;
        if (grads.dCm) grads.dCm[b * T * N + tn] = sc;
      }
    }
  }
}

void selective_scan_step(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                         const float* Dskip, const float* z, const float* delta_bias, bool delta_softplus,
                         float* h, float* out, int64_t B, int64_t D, int64_t N) {
#pragma omp parallel for schedule(static) if (B * D * N > (1 << 16))
  for (int64_t bd = 0; bd < B * D; ++bd) {
    const int64_t b = bd / D, d = bd % D;
    float dt = delta[bd] + (delta_bias ? delta_bias[d] : 0.f);
    if (delta_softplus) dt = detail::softplus_approx(dt);
    const float uu = u[bd], dtu = dt * uu;
    const float* Ad = A + d * N;
    const float* Bb = Bm + b * N;
    const float* Cb = Cm + b * N;
    float* hd = h + bd * N;
    float y = 0.f;
#pragma omp simd reduction(+ : y)
    for (int64_t n = 0; n < N; ++n) {
      const float hv = std::fma(exp_approx(dt * Ad[n]), hd[n], dtu * Bb[n]);
      hd[n] = hv;
      y += hv * Cb[n];
    }
    y += (Dskip ? Dskip[d] : 0.f) * uu;
    if (z) y *= z[bd] * detail::sigmoid_approx(z[bd]);
    out[bd] = y;
  }
}

}  // namespace sw::kernels::scan
