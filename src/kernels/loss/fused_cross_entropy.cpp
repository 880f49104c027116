#include "kernels/loss/fused_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/scratch.h"
#include "kernels/gemm/gemm.h"

namespace sw::kernels {
namespace {

// logits[r, j] = h[r] . W[v0 + j] for a block of rows and a chunk of the vocabulary.
void chunk_logits(const float* h, const void* w, DType w_type, int64_t rows, int64_t dim, int64_t v0, int64_t vc,
                  float* logits) {
  GemmArgs g;
  g.m = rows, g.n = vc, g.k = dim;
  g.a = h, g.lda = dim;
  g.b = static_cast<const char*>(w) + v0 * dim * dtype_size(w_type), g.b_type = w_type, g.trans_b = true, g.ldb = dim;
  g.c = logits, g.ldc = vc;
  gemm(g);
}

}  // namespace

void fused_cross_entropy_fwd(const float* h, const void* w, DType w_type, const int32_t* targets, float* loss,
                             float* lse, const FusedCrossEntropyDims& d) {
  float* logits = scratch_floats(0, static_cast<size_t>(d.row_block * d.vocab_chunk));
  float* run_max = scratch_floats(1, static_cast<size_t>(d.row_block));
  float* run_sum = scratch_floats(2, static_cast<size_t>(d.row_block));
  float* tgt_logit = scratch_floats(3, static_cast<size_t>(d.row_block));
  for (int64_t r0 = 0; r0 < d.n; r0 += d.row_block) {
    int64_t rows = std::min(d.row_block, d.n - r0);
    for (int64_t r = 0; r < rows; ++r) {
      run_max[r] = -std::numeric_limits<float>::infinity();
      run_sum[r] = 0.f;
      tgt_logit[r] = 0.f;
    }
    for (int64_t v0 = 0; v0 < d.vocab; v0 += d.vocab_chunk) {
      int64_t vc = std::min(d.vocab_chunk, d.vocab - v0);
      chunk_logits(h + r0 * d.dim, w, w_type, rows, d.dim, v0, vc, logits);
#pragma omp parallel for schedule(static) if (rows * vc > (1 << 14))
      for (int64_t r = 0; r < rows; ++r) {
        const float* lr = logits + r * vc;
        float m = run_max[r];
        for (int64_t j = 0; j < vc; ++j) m = std::max(m, lr[j]);
        float s = run_sum[r] * std::exp(run_max[r] - m);
        for (int64_t j = 0; j < vc; ++j) s += std::exp(lr[j] - m);
        run_max[r] = m;
        run_sum[r] = s;
        int32_t t = targets[r0 + r];
        if (t >= v0 && t < v0 + vc) tgt_logit[r] = lr[t - v0];
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      lse[r0 + r] = run_max[r] + std::log(run_sum[r]);
      loss[r0 + r] = targets[r0 + r] < 0 ? 0.f : lse[r0 + r] - tgt_logit[r];
    }
  }
}

void fused_cross_entropy_bwd(const float* h, const void* w, DType w_type, const int32_t* targets, const float* lse,
                             const float* dloss, float* dh, float* dw, const FusedCrossEntropyDims& d) {
  float* probs = scratch_floats(0, static_cast<size_t>(d.row_block * d.vocab_chunk));
  std::memset(dh, 0, sizeof(float) * d.n * d.dim);
  if (dw) std::memset(dw, 0, sizeof(float) * d.vocab * d.dim);
  for (int64_t r0 = 0; r0 < d.n; r0 += d.row_block) {
    int64_t rows = std::min(d.row_block, d.n - r0);
    for (int64_t v0 = 0; v0 < d.vocab; v0 += d.vocab_chunk) {
      int64_t vc = std::min(d.vocab_chunk, d.vocab - v0);
      chunk_logits(h + r0 * d.dim, w, w_type, rows, d.dim, v0, vc, probs);
      // dlogits = dloss * (softmax - onehot(target)); ignored rows get zero.
#pragma omp parallel for schedule(static) if (rows * vc > (1 << 14))
      for (int64_t r = 0; r < rows; ++r) {
        float* pr = probs + r * vc;
        int32_t t = targets[r0 + r];
        float g = t < 0 ? 0.f : dloss[r0 + r];
        float l = lse[r0 + r];
        for (int64_t j = 0; j < vc; ++j) pr[j] = g * std::exp(pr[j] - l);
        if (t >= v0 && t < v0 + vc) pr[t - v0] -= g;
      }
      // dh[rows] += dlogits @ W_chunk
      GemmArgs gh;
      gh.m = rows, gh.n = d.dim, gh.k = vc, gh.beta = 1.f;
      gh.a = probs, gh.lda = vc;
      gh.b = static_cast<const char*>(w) + v0 * d.dim * dtype_size(w_type), gh.b_type = w_type, gh.ldb = d.dim;
      gh.c = dh + r0 * d.dim, gh.ldc = d.dim;
      gemm(gh);
      if (dw) {  // dW_chunk += dlogits^T @ h[rows]
        GemmArgs gw;
        gw.m = vc, gw.n = d.dim, gw.k = rows, gw.beta = 1.f;
        gw.a = probs, gw.trans_a = true, gw.lda = vc;
        gw.b = h + r0 * d.dim, gw.ldb = d.dim;
        gw.c = dw + v0 * d.dim, gw.ldc = d.dim;
        gemm(gw);
      }
    }
  }
}

}  // namespace sw::kernels
