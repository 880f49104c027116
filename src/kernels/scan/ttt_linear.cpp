#include "kernels/scan/ttt_linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"

namespace sw::kernels::scan {
namespace {

enum Slot : int { kSlotWork = 0, kSlotCheckpoints = 1, kSlotGroup = 2, kSlotPartial = 7 };

// ---- small dense helpers over rows of length D (innermost loops contiguous, so they vectorise) ----

inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}

inline void axpy(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] = std::fma(alpha, x[c], y[c]);
}

// Dense products of the small per-mini-batch matrices. out[r][c] += sum_a x[r * xr + a * xa] * Y[a][c]
// (x read through strides so that x^T needs no copy), register-blocked as kRowBlock rows x 16
// columns: one loaded row segment of Y feeds kRowBlock accumulators that stay in registers. Written
// with GCC vector types (lowered to whatever vector width -march allows, no intrinsics) because GCC
// does not vectorise the equivalent scalar outer loop unless every trip count is a compile-time constant.
// (Vec16 values never cross a function boundary: that would change the ABI without AVX-512.)
typedef float Vec16 __attribute__((vector_size(64)));
constexpr int kRowBlock = 8;

void gemm_acc(const float* __restrict x, int64_t xr, int64_t xa, const float* __restrict Y, int64_t R, int64_t K,
              int64_t C, float* __restrict out) {
  int64_t c0 = 0;
  for (; c0 + 16 <= C; c0 += 16) {
    int64_t r0 = 0;
    for (; r0 + kRowBlock <= R; r0 += kRowBlock) {
      Vec16 acc[kRowBlock];
      for (int i = 0; i < kRowBlock; ++i) std::memcpy(&acc[i], out + (r0 + i) * C + c0, sizeof(Vec16));
      for (int64_t a = 0; a < K; ++a) {
        Vec16 y;
        std::memcpy(&y, Y + a * C + c0, sizeof y);
        for (int i = 0; i < kRowBlock; ++i) acc[i] += x[(r0 + i) * xr + a * xa] * y;
      }
      for (int i = 0; i < kRowBlock; ++i) std::memcpy(out + (r0 + i) * C + c0, &acc[i], sizeof(Vec16));
    }
    for (; r0 < R; ++r0) {
      Vec16 acc, y;
      std::memcpy(&acc, out + r0 * C + c0, sizeof acc);
      for (int64_t a = 0; a < K; ++a) {
        std::memcpy(&y, Y + a * C + c0, sizeof y);
        acc += x[r0 * xr + a * xa] * y;
      }
      std::memcpy(out + r0 * C + c0, &acc, sizeof acc);
    }
  }
  for (; c0 < C; ++c0)  // columns beyond the last multiple of 16
    for (int64_t r = 0; r < R; ++r) {
      float acc = out[r * C + c0];
      for (int64_t a = 0; a < K; ++a) acc = std::fma(x[r * xr + a * xa], Y[a * C + c0], acc);
      out[r * C + c0] = acc;
    }
}

// out[r] = start + x[r] @ W for r < rows (x [rows, D], W [D, D]), start = out[r] (accumulate), bias, or 0.
void rows_times_matrix(const float* x, const float* W, const float* bias, int64_t rows, int64_t D, float* out,
                       bool accumulate = false) {
  if (!accumulate)
    for (int64_t r = 0; r < rows; ++r) {
      if (bias)
        std::memcpy(out + r * D, bias, D * sizeof(float));
      else
        std::fill(out + r * D, out + (r + 1) * D, 0.f);
    }
  gemm_acc(x, D, 1, W, rows, D, D, out);
}

// acc += x^T y; x, y [rows, D], acc [D, D].
void add_xt_y(const float* x, const float* y, int64_t rows, int64_t D, float* acc) { gemm_acc(x, 1, D, y, D, rows, D, acc); }

void transpose(const float* src, int64_t D, float* dst) {
  for (int64_t a = 0; a < D; ++a)
    for (int64_t c = 0; c < D; ++c) dst[c * D + a] = src[a * D + c];
}

// LayerNorm statistics of one row: x_hat and sd = sqrt(var + eps) (biased variance).
inline void layer_norm_row(const float* z, int64_t D, float eps, float* x_hat, float* sd) {
  float mu = 0.f;
#pragma omp simd reduction(+ : mu)
  for (int64_t c = 0; c < D; ++c) mu += z[c];
  mu /= static_cast<float>(D);
  float var = 0.f;
#pragma omp simd reduction(+ : var)
  for (int64_t c = 0; c < D; ++c) var += (z[c] - mu) * (z[c] - mu);
  var /= static_cast<float>(D);
  *sd = std::sqrt(var + eps);
  const float inv = 1.f / *sd;
#pragma omp simd
  for (int64_t c = 0; c < D; ++c) x_hat[c] = (z[c] - mu) * inv;
}

// Backward of x_hat = LN_normalise(z) for an upstream d x_hat: (dxh - mean(dxh) - xh mean(dxh xh)) / sd.
inline void layer_norm_row_bwd(const float* dxh, const float* xh, float sd, int64_t D, float* dz) {
  float m1 = 0.f, m2 = 0.f;
#pragma omp simd reduction(+ : m1, m2)
  for (int64_t c = 0; c < D; ++c) {
    m1 += dxh[c];
    m2 += dxh[c] * xh[c];
  }
  m1 /= static_cast<float>(D);
  m2 /= static_cast<float>(D);
  const float inv = 1.f / sd;
#pragma omp simd
  for (int64_t c = 0; c < D; ++c) dz[c] = (dxh[c] - m1 - xh[c] * m2) * inv;
}

// ---- per-mini-batch working set ----

struct Dims {
  int64_t B, T, H, D, M;
};

// Arrays for one mini-batch of up to M tokens, carved out of one scratch buffer.
struct MiniBatch {
  int64_t m = 0;  // tokens in this mini-batch
  float *q, *k, *v;           // [M, D] gathered rows
  float *xh1, *gxh, *G;       // [M, D] inner-loss LN: x_hat, gamma * (LN(z) - target), dLoss/dz
  float *zbar, *xh2;          // [M, D] readout pre-LN and its x_hat
  float *sd1, *sd2;           // [M]
  float *qk;                  // [M, M] xq_i . xk_j
  float *lr, *te;             // [M] eta_j and token_eta_i
  float *WT;                  // [D, D] transpose of W
  // backward only
  float *dzbar, *dG, *dq, *dk, *dv, *tmp;  // [M, D]
  float *deta;                             // [M, M]
  float *dWT;                              // [D, D]

  static int64_t padded(int64_t n) { return (n + 15) / 16 * 16; }  // keeps every array 64-byte aligned
  static int64_t floats_needed(int64_t M, int64_t D) {
    return 14 * padded(M * D) + 2 * padded(M * M) + 4 * padded(M) + 2 * padded(D * D);
  }
  void carve(float* p, int64_t M, int64_t D) {
    auto take = [&](int64_t n) {
      float* r = p;
      p += padded(n);
      return r;
    };
    q = take(M * D), k = take(M * D), v = take(M * D);
    xh1 = take(M * D), gxh = take(M * D), G = take(M * D), zbar = take(M * D), xh2 = take(M * D);
    sd1 = take(M), sd2 = take(M), qk = take(M * M), lr = take(M), te = take(M), WT = take(D * D);
    dzbar = take(M * D), dG = take(M * D), dq = take(M * D), dk = take(M * D), dv = take(M * D), tmp = take(M * D);
    deta = take(M * M), dWT = take(D * D);
  }
};

inline int64_t row_offset(const Dims& d, int64_t b, int64_t t, int64_t h) { return ((b * d.T + t) * d.H + h) * d.D; }

// Loads the mini-batch starting at token s and computes the inner-loss gradients G at (W, bias).
void inner_gradients(const TttLinearInputs& in, const Dims& d, int64_t b, int64_t h, int64_t s, const float* W,
                     const float* bias, MiniBatch& mb) {
  const int64_t D = d.D, m = mb.m;
  const float* gamma = in.ln_gamma + h * D;
  const float* beta = in.ln_beta + h * D;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t off = row_offset(d, b, s + j, h);
    std::memcpy(mb.q + j * D, in.xq + off, D * sizeof(float));
    std::memcpy(mb.k + j * D, in.xk + off, D * sizeof(float));
    std::memcpy(mb.v + j * D, in.xv + off, D * sizeof(float));
    mb.lr[j] = in.eta[(b * d.T + s + j) * d.H + h];
    mb.te[j] = in.token_eta ? in.token_eta[j] : 1.f / static_cast<float>(j + 1);
  }
  float* z = mb.tmp;
  rows_times_matrix(mb.k, W, bias, m, D, z);
  for (int64_t j = 0; j < m; ++j) {
    float* xh = mb.xh1 + j * D;
    float* gx = mb.gxh + j * D;
    const float* kj = mb.k + j * D;
    const float* vj = mb.v + j * D;
    layer_norm_row(z + j * D, D, in.eps, xh, &mb.sd1[j]);
    float mg = 0.f, mgx = 0.f;
#pragma omp simd reduction(+ : mg, mgx)
    for (int64_t c = 0; c < D; ++c) {
      gx[c] = (gamma[c] * xh[c] + beta[c] - (vj[c] - kj[c])) * gamma[c];
      mg += gx[c];
      mgx += gx[c] * xh[c];
    }
    mg /= static_cast<float>(D);
    mgx /= static_cast<float>(D);
    const float inv = 1.f / mb.sd1[j];
    float* Gj = mb.G + j * D;
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) Gj[c] = (gx[c] - mg - xh[c] * mgx) * inv;
  }
}

// Dual-form readout: zbar_i = q_i W + b - sum_{j<=i} eta_ij (q_i . k_j + 1) G_j, then its LayerNorm.
// Writes out rows (q + LN(zbar)) when out is not null.
void readout(const TttLinearInputs& in, const Dims& d, int64_t b, int64_t h, int64_t s, const float* W,
             const float* bias, MiniBatch& mb, float* out) {
  const int64_t D = d.D, m = mb.m, M = d.M;
  const float* gamma = in.ln_gamma + h * D;
  const float* beta = in.ln_beta + h * D;
  rows_times_matrix(mb.q, W, bias, m, D, mb.zbar);
  for (int64_t i = 0; i < m; ++i) {
    float* zi = mb.zbar + i * D;
    for (int64_t j = 0; j <= i; ++j) {
      const float qk = dot(mb.q + i * D, mb.k + j * D, D);
      mb.qk[i * M + j] = qk;
      axpy(-mb.te[i] * mb.lr[j] * (qk + 1.f), mb.G + j * D, zi, D);
    }
    float* xh = mb.xh2 + i * D;
    layer_norm_row(zi, D, in.eps, xh, &mb.sd2[i]);
    if (out) {
      float* o = out + row_offset(d, b, s + i, h);
      const float* qi = mb.q + i * D;
#pragma omp simd
      for (int64_t c = 0; c < D; ++c) o[c] = qi[c] + gamma[c] * xh[c] + beta[c];
    }
  }
}

// End-of-mini-batch step: W -= sum_j eta_{m-1,j} k_j^T G_j, b -= sum_j eta_{m-1,j} G_j.
void apply_update(const Dims& d, MiniBatch& mb, float* W, float* bias) {
  const int64_t D = d.D, m = mb.m;
  const float te_last = mb.te[m - 1];
  for (int64_t j = 0; j < m; ++j) {
    const float el = te_last * mb.lr[j];
    for (int64_t a = 0; a < D; ++a) mb.tmp[j * D + a] = -el * mb.k[j * D + a];
    axpy(-el, mb.G + j * D, bias, D);
  }
  add_xt_y(mb.tmp, mb.G, m, D, W);
}

// Backward of one mini-batch. On entry dW, db hold the gradients w.r.t. the mini-batch's END state;
// on exit, w.r.t. its START state (W, bias). Writes the token gradients of the mini-batch and adds
// into dgamma, dbeta, dte.
void minibatch_bwd(const TttLinearInputs& in, const Dims& d, int64_t b, int64_t h, int64_t s, const float* W,
                   const float* bias, const float* dout, MiniBatch& mb, float* dW, float* db, float* dgamma,
                   float* dbeta, float* dte, const TttLinearGrads& g) {
  const int64_t D = d.D, m = mb.m, M = d.M;
  const float* gamma = in.ln_gamma + h * D;
  const float* beta = in.ln_beta + h * D;
  const float invD = 1.f / static_cast<float>(D);
  inner_gradients(in, d, b, h, s, W, bias, mb);
  readout(in, d, b, h, s, W, bias, mb, nullptr);
  std::fill(mb.dG, mb.dG + m * D, 0.f);
  std::fill(mb.deta, mb.deta + m * M, 0.f);

  // 1. Through the end-of-mini-batch update (needs the incoming dW, db before they are added to).
  const float te_last = mb.te[m - 1];
  rows_times_matrix(mb.k, dW, db, m, D, mb.tmp);  // tmp_j = k_j dW + db
  transpose(dW, D, mb.dWT);
  float* scaled_G = mb.dq;  // dq rows are free until step 2
  for (int64_t j = 0; j < m; ++j) {
    const float el = te_last * mb.lr[j];
    const float* Gj = mb.G + j * D;
    axpy(-el, mb.tmp + j * D, mb.dG + j * D, D);
    mb.deta[(m - 1) * M + j] -= dot(mb.tmp + j * D, Gj, D);
    for (int64_t c = 0; c < D; ++c) scaled_G[j * D + c] = -el * Gj[c];
  }
  rows_times_matrix(scaled_G, mb.dWT, nullptr, m, D, mb.dk);  // dk_j = -el_j dW G_j^T

  // 2. Output LayerNorm and the residual.
  for (int64_t i = 0; i < m; ++i) {
    const float* dy = dout + row_offset(d, b, s + i, h);
    const float* xh = mb.xh2 + i * D;
    float* dxh = mb.dv + i * D;  // dv rows are free until step 5
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) {
      dgamma[c] += dy[c] * xh[c];
      dbeta[c] += dy[c];
      dxh[c] = dy[c] * gamma[c];
    }
    layer_norm_row_bwd(dxh, xh, mb.sd2[i], D, mb.dzbar + i * D);
    std::memcpy(mb.dq + i * D, dy, D * sizeof(float));
  }

  // 3. Dual-form readout zbar_i = q_i W + b - sum_{j<=i} eta_ij (q_i . k_j + 1) G_j.
  add_xt_y(mb.q, mb.dzbar, m, D, dW);
  for (int64_t i = 0; i < m; ++i) axpy(1.f, mb.dzbar + i * D, db, D);
  transpose(W, D, mb.WT);
  rows_times_matrix(mb.dzbar, mb.WT, nullptr, m, D, mb.dq, true);  // dq_i += W dzbar_i
  for (int64_t i = 0; i < m; ++i) {
    const float* dzi = mb.dzbar + i * D;
    float* dqi = mb.dq + i * D;
    for (int64_t j = 0; j <= i; ++j) {
      const float p = dot(dzi, mb.G + j * D, D);
      const float e = mb.te[i] * mb.lr[j];
      const float qk1 = mb.qk[i * M + j] + 1.f;
      mb.deta[i * M + j] -= qk1 * p;
      axpy(-e * p, mb.k + j * D, dqi, D);
      axpy(-e * p, mb.q + i * D, mb.dk + j * D, D);
      axpy(-e * qk1, dzi, mb.dG + j * D, D);
    }
  }

  // 4. eta_ij = te_i * lr_j.
  for (int64_t j = 0; j < m; ++j) {
    float dlr = 0.f;
    for (int64_t i = j; i < m; ++i) dlr += mb.te[i] * mb.deta[i * M + j];
    if (g.deta) g.deta[(b * d.T + s + j) * d.H + h] = dlr;
  }
  for (int64_t i = 0; i < m; ++i) {
    float acc = 0.f;
    for (int64_t j = 0; j <= i; ++j) acc += mb.lr[j] * mb.deta[i * M + j];
    dte[i] += acc;
  }

  // 5. Through G_j = (gxh - mean(gxh) - xh mean(gxh xh)) / sd,  gxh = gamma (gamma xh + beta - (v - k)).
  for (int64_t j = 0; j < m; ++j) {
    const float* hh = mb.dG + j * D;
    const float* xh = mb.xh1 + j * D;
    const float* gx = mb.gxh + j * D;
    const float* kj = mb.k + j * D;
    const float* vj = mb.v + j * D;
    const float sd = mb.sd1[j], inv = 1.f / sd;
    float ms = 0.f, msx = 0.f, mgx = 0.f, hG = 0.f;
#pragma omp simd reduction(+ : ms, msx, mgx, hG)
    for (int64_t c = 0; c < D; ++c) {
      ms += hh[c] * inv;
      msx += hh[c] * inv * xh[c];
      mgx += gx[c] * xh[c];
      hG += hh[c] * mb.G[j * D + c];
    }
    ms *= invD, msx *= invD, mgx *= invD;
    const float dsd = -hG * inv;
    float* dvj = mb.dv + j * D;
    float* dkj = mb.dk + j * D;
    float* dxh = mb.tmp + j * D;  // d x_hat, then dz_j in place below
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) {
      const float sc = hh[c] * inv;
      const float dg = sc - ms - xh[c] * msx;  // d gxh
      const float e = gamma[c] * xh[c] + beta[c] - (vj[c] - kj[c]);
      dgamma[c] += dg * (e + gamma[c] * xh[c]);
      dbeta[c] += dg * gamma[c];
      dvj[c] = -dg * gamma[c];  // target = v - k
      dkj[c] += dg * gamma[c];
      dxh[c] = -mgx * sc - msx * gx[c] + dg * gamma[c] * gamma[c];
    }
    layer_norm_row_bwd(dxh, xh, sd, D, dxh);
    const float sd_term = dsd * invD;  // d sd / d z_c = x_hat_c / D
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) dxh[c] += sd_term * xh[c];
  }

  // 6. z_j = k_j W + b.
  rows_times_matrix(mb.tmp, mb.WT, nullptr, m, D, mb.dk, true);  // dk_j += W dz_j
  for (int64_t j = 0; j < m; ++j) axpy(1.f, mb.tmp + j * D, db, D);
  add_xt_y(mb.k, mb.tmp, m, D, dW);

  for (int64_t i = 0; i < m; ++i) {
    const int64_t off = row_offset(d, b, s + i, h);
    if (g.dxq) std::memcpy(g.dxq + off, mb.dq + i * D, D * sizeof(float));
    if (g.dxk) std::memcpy(g.dxk + off, mb.dk + i * D, D * sizeof(float));
    if (g.dxv) std::memcpy(g.dxv + off, mb.dv + i * D, D * sizeof(float));
  }
}

Dims dims_of(const TttLinearInputs& in) { return Dims{in.B, in.T, in.H, in.D, in.mini_batch}; }

MiniBatch working_set(const Dims& d, int64_t extra_floats, float** extra) {
  MiniBatch mb;
  float* p = scratch_floats(kSlotWork, MiniBatch::floats_needed(d.M, d.D) + extra_floats);
  mb.carve(p, d.M, d.D);
  *extra = p + MiniBatch::floats_needed(d.M, d.D);
  return mb;
}

}  // namespace

void ttt_linear_fwd(const TttLinearInputs& in, float* out, float* W_out, float* b_out) {
  SW_DASSERT(in.mini_batch > 0 && in.D > 0);
  const Dims d = dims_of(in);
  const int64_t D = d.D;
#pragma omp parallel for schedule(dynamic)
  for (int64_t item = 0; item < d.B * d.H; ++item) {
    const int64_t b = item / d.H, h = item % d.H;
    float* state;
    MiniBatch mb = working_set(d, D * D + D, &state);
    float* W = state;
    float* bias = state + D * D;
    std::memcpy(W, in.W0 + item * D * D, D * D * sizeof(float));
    std::memcpy(bias, in.b0 + item * D, D * sizeof(float));
    for (int64_t s = 0; s < d.T; s += d.M) {
      mb.m = std::min(d.M, d.T - s);
      inner_gradients(in, d, b, h, s, W, bias, mb);
      readout(in, d, b, h, s, W, bias, mb, out);
      apply_update(d, mb, W, bias);
    }
    if (W_out) std::memcpy(W_out + item * D * D, W, D * D * sizeof(float));
    if (b_out) std::memcpy(b_out + item * D, bias, D * sizeof(float));
  }
}

void ttt_linear_bwd(const TttLinearInputs& in, const float* dout, const float* dW_out, const float* db_out,
                    const TttLinearGrads& grads) {
  SW_DASSERT(in.mini_batch > 0 && in.D > 0);
  const Dims d = dims_of(in);
  const int64_t D = d.D, M = d.M, S = D * D + D;  // S: floats of one (W, b) state
  const int64_t n_items = d.B * d.H;
  const int64_t n_mb = (d.T + M - 1) / M;
  // Checkpoint every `group` mini-batches; recompute the states inside a group during the backward.
  const int64_t group = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n_mb)))));
  const int64_t n_groups = (n_mb + group - 1) / group;
  // Per-item partial sums of the shared parameters' gradients, reduced in item order afterwards so that
  // the result does not depend on thread timing.
  const int64_t P = 2 * D + M;
  float* partial = scratch_floats(kSlotPartial, n_items * P);
#pragma omp parallel for schedule(dynamic)
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t b = item / d.H, h = item % d.H;
    float* extra;
    MiniBatch mb = working_set(d, 2 * S, &extra);
    float* cur = extra;        // running (W, b)
    float* dstate = extra + S; // (dW, db)
    float* ckpt = scratch_floats(kSlotCheckpoints, std::max<int64_t>(n_groups, 1) * S);
    float* states = scratch_floats(kSlotGroup, group * S);
    float* part = partial + item * P;
    std::fill(part, part + P, 0.f);

    std::memcpy(cur, in.W0 + item * D * D, D * D * sizeof(float));
    std::memcpy(cur + D * D, in.b0 + item * D, D * sizeof(float));
    for (int64_t k = 0; k < n_mb; ++k) {
      if (k % group == 0) std::memcpy(ckpt + (k / group) * S, cur, S * sizeof(float));
      mb.m = std::min(M, d.T - k * M);
      inner_gradients(in, d, b, h, k * M, cur, cur + D * D, mb);
      apply_update(d, mb, cur, cur + D * D);
    }
    if (dW_out)
      std::memcpy(dstate, dW_out + item * D * D, D * D * sizeof(float));
    else
      std::fill(dstate, dstate + D * D, 0.f);
    if (db_out)
      std::memcpy(dstate + D * D, db_out + item * D, D * sizeof(float));
    else
      std::fill(dstate + D * D, dstate + S, 0.f);

    for (int64_t gi = n_groups - 1; gi >= 0; --gi) {
      const int64_t k0 = gi * group, k1 = std::min(n_mb, k0 + group);
      std::memcpy(cur, ckpt + gi * S, S * sizeof(float));
      for (int64_t k = k0; k < k1; ++k) {
        std::memcpy(states + (k - k0) * S, cur, S * sizeof(float));
        if (k + 1 == k1) break;  // the group's last start state is all the backward needs
        mb.m = std::min(M, d.T - k * M);
        inner_gradients(in, d, b, h, k * M, cur, cur + D * D, mb);
        apply_update(d, mb, cur, cur + D * D);
      }
      for (int64_t k = k1 - 1; k >= k0; --k) {
        mb.m = std::min(M, d.T - k * M);
        const float* st = states + (k - k0) * S;
        minibatch_bwd(in, d, b, h, k * M, st, st + D * D, dout, mb, dstate, dstate + D * D, part, part + D,
                      part + 2 * D, grads);
      }
    }
    if (grads.dW0) std::memcpy(grads.dW0 + item * D * D, dstate, D * D * sizeof(float));
    if (grads.db0) std::memcpy(grads.db0 + item * D, dstate + D * D, D * sizeof(float));
  }
  if (grads.dln_gamma) std::fill(grads.dln_gamma, grads.dln_gamma + d.H * D, 0.f);
  if (grads.dln_beta) std::fill(grads.dln_beta, grads.dln_beta + d.H * D, 0.f);
  if (grads.dtoken_eta) std::fill(grads.dtoken_eta, grads.dtoken_eta + M, 0.f);
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t h = item % d.H;
    const float* part = partial + item * P;
    for (int64_t c = 0; c < D; ++c) {
      if (grads.dln_gamma) grads.dln_gamma[h * D + c] += part[c];
      if (grads.dln_beta) grads.dln_beta[h * D + c] += part[D + c];
    }
    if (grads.dtoken_eta)
      for (int64_t i = 0; i < M; ++i) grads.dtoken_eta[i] += part[2 * D + i];
  }
}

void ttt_linear_step(const float* xq, const float* xk, const float* xv, const float* eta, float token_eta,
                     const float* ln_gamma, const float* ln_beta, float* W, float* b, float* W_grad, float* b_grad,
                     bool closes_mini_batch, float* out, int64_t B, int64_t H, int64_t D, float eps) {
#pragma omp parallel for schedule(static) if (B * H * D * D > (1 << 16))
  for (int64_t item = 0; item < B * H; ++item) {
    const int64_t h = item % H;
    const float* gamma = ln_gamma + h * D;
    const float* beta = ln_beta + h * D;
    const float* q = xq + item * D;
    const float* k = xk + item * D;
    const float* v = xv + item * D;
    float* Wi = W + item * D * D;
    float* bi = b + item * D;
    float* Wg = W_grad + item * D * D;
    float* bg = b_grad + item * D;
    float* buf = scratch_floats(kSlotWork, 5 * D + 64);
    float* z = buf;
    float* xh = buf + D;
    float* G = buf + 2 * D;
    float* zq = buf + 3 * D;
    float* zg = buf + 4 * D;
    // Inner-loss gradient at the mini-batch's start weights.
    rows_times_matrix(k, Wi, bi, 1, D, z);
    float sd;
    layer_norm_row(z, D, eps, xh, &sd);
    float mg = 0.f, mgx = 0.f;
    for (int64_t c = 0; c < D; ++c) {
      const float gx = (gamma[c] * xh[c] + beta[c] - (v[c] - k[c])) * gamma[c];
      G[c] = gx;
      mg += gx;
      mgx += gx * xh[c];
    }
    mg /= static_cast<float>(D);
    mgx /= static_cast<float>(D);
    for (int64_t c = 0; c < D; ++c) G[c] = (G[c] - mg - xh[c] * mgx) / sd;
    const float lr = eta[item];
    for (int64_t a = 0; a < D; ++a) axpy(lr * k[a], G, Wg + a * D, D);
    axpy(lr, G, bg, D);
    // Readout with W - te W_grad, b - te b_grad.
    rows_times_matrix(q, Wi, bi, 1, D, zq);
    rows_times_matrix(q, Wg, bg, 1, D, zg);
    axpy(-token_eta, zg, zq, D);
    layer_norm_row(zq, D, eps, xh, &sd);
    for (int64_t c = 0; c < D; ++c) out[item * D + c] = q[c] + gamma[c] * xh[c] + beta[c];
    if (closes_mini_batch) {
      axpy(-token_eta, Wg, Wi, D * D);
      axpy(-token_eta, bg, bi, D);
      std::fill(Wg, Wg + D * D, 0.f);
      std::fill(bg, bg + D, 0.f);
    }
  }
}

}  // namespace sw::kernels::scan
