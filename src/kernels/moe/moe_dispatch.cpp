#include "kernels/moe/moe_dispatch.h"

#include <omp.h>

#include <cstring>
#include <vector>

#include "kernels/elementwise/activations.h"
#include "core/error.h"
#include "kernels/gemm/gemm.h"

namespace sw::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;  // elements below which a pass stays on one thread

// The GEMM wrapper caches one oneDNN primitive per shape. Expert runs have a different row count
// every step, so each run is split into a multiple of kRowQuantum rows plus a tail: at most
// N*k/kRowQuantum + kRowQuantum shapes per weight shape ever exist, and the cache stays bounded.
constexpr int64_t kRowQuantum = 32;

// C[m, n] (beta)= A[m, kk] @ op(B). A row-major with row stride lda; B [n, kk] (trans_b) or [kk, n].
void gemm_rows(int64_t m, int64_t n, int64_t kk, const float* a, int64_t lda, const void* b, DType bt, bool trans_b,
               int64_t ldb, float* c, int64_t ldc, float beta) {
  const int64_t big = m / kRowQuantum * kRowQuantum;
  auto run = [&](int64_t r0, int64_t rows) {
    GemmArgs g;
    g.m = rows, g.n = n, g.k = kk, g.beta = beta;
    g.a = a + r0 * lda, g.lda = lda;
    g.b = b, g.b_type = bt, g.trans_b = trans_b, g.ldb = ldb;
    g.c = c + r0 * ldc, g.ldc = ldc;
    gemm(g);
  };
  if (big > 0) run(0, big);
  if (m > big) run(big, m - big);
}

// C[m, n] = A^T @ B with A [r, m] (row stride lda) and B [r, n] (row stride ldb): a weight gradient,
// reducing over the r rows of one expert's run; split like gemm_rows, the tail accumulating.
void gemm_tn_rows(int64_t r, int64_t m, int64_t n, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                  int64_t ldc) {
  const int64_t big = r / kRowQuantum * kRowQuantum;
  auto run = [&](int64_t r0, int64_t rows, float beta) {
    GemmArgs g;
    g.m = m, g.n = n, g.k = rows, g.beta = beta;
    g.a = a + r0 * lda, g.trans_a = true, g.lda = lda;
    g.b = b + r0 * ldb, g.ldb = ldb;
    g.c = c, g.ldc = ldc;
    gemm(g);
  };
  if (big > 0) run(0, big, 0.f);
  if (r > big) run(big, r - big, big > 0 ? 1.f : 0.f);
}

const void* expert_ptr(const void* base, int64_t e, int64_t per_expert, DType t) {
  return static_cast<const char*>(base) + static_cast<size_t>(e * per_expert) * dtype_size(t);
}

// Experts that received tokens, and whether to run them concurrently.
std::vector<int64_t> active_experts(const int64_t* offsets, int64_t E) {
  std::vector<int64_t> act;
  for (int64_t e = 0; e < E; ++e)
    if (offsets[e + 1] > offsets[e]) act.push_back(e);
  return act;
}

// Experts run concurrently (one thread per GEMM, dynamic schedule) when there are enough of them
// to keep every thread busy, or when the runs are short (oneDNN's per-call overhead dominates and
// its threads idle); with few active experts (a collapsed router) each GEMM uses every thread.
// Measured on the 2-core Zen1 VM (tests/models/moe_test.cpp MoeBench): for 16 experts top-2 and 64
// top-8 at 2048-4096 tokens the concurrent schedule was 90-100% and 67-92% of dense, the sequential
// one ~100% and 50-57%.
constexpr int64_t kParallelRunRows = 64;

bool run_parallel(MoeSchedule s, int64_t rows, size_t n_active) {
  const int threads = omp_get_max_threads();
  if (s == MoeSchedule::kSequential || n_active < 2 || threads < 2) return false;
  if (s == MoeSchedule::kParallel) return true;
  return static_cast<int64_t>(n_active) >= 4 * threads || rows < kParallelRunRows * static_cast<int64_t>(n_active);
}

template <class F>
void for_experts(const std::vector<int64_t>& act, bool parallel, F f) {
  if (parallel) {
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < act.size(); ++i) f(act[i]);
  } else {
    for (int64_t e : act) f(e);
  }
}

}  // namespace

int64_t moe_build_plan(const int32_t* expert, int64_t A, int64_t E, int64_t* offsets, int32_t* slot_assign,
                       int32_t* assign_slot) {
  for (int64_t e = 0; e <= E; ++e) offsets[e] = 0;
  for (int64_t a = 0; a < A; ++a)
    if (expert[a] >= 0) ++offsets[expert[a] + 1];
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  // Second pass: place each assignment at its expert's next free slot (stable: assignment order).
  std::vector<int64_t> next(offsets, offsets + E);
  for (int64_t a = 0; a < A; ++a) {
    const int32_t e = expert[a];
    if (e < 0) {
      assign_slot[a] = -1;
      continue;
    }
    const int64_t s = next[e]++;
    slot_assign[s] = static_cast<int32_t>(a);
    assign_slot[a] = static_cast<int32_t>(s);
  }
  return offsets[E];
}

void moe_gather(const float* x, const int32_t* slot_assign, int64_t S, int64_t k, int64_t D, float* xs) {
#pragma omp parallel for schedule(static) if (S * D > kParallelMin)
  for (int64_t s = 0; s < S; ++s) std::memcpy(xs + s * D, x + (slot_assign[s] / k) * D, sizeof(float) * D);
}

void moe_combine(const float* ys, const int32_t* assign_slot, const float* gates, int64_t N, int64_t k, int64_t D,
                 float* y) {
#pragma omp parallel for schedule(static) if (N * k * D > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    float* yn = y + n * D;
    for (int64_t d = 0; d < D; ++d) yn[d] = 0.f;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = assign_slot[n * k + j];
      if (s < 0) continue;
      const float g = gates ? gates[n * k + j] : 1.f;
      const float* src = ys + static_cast<int64_t>(s) * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) yn[d] += g * src[d];
    }
  }
}

void moe_combine_backward(const float* dy, const float* ys, const int32_t* assign_slot, const float* gates, int64_t N,
                          int64_t k, int64_t D, float* dys, float* dgates) {
#pragma omp parallel for schedule(static) if (N * k * D > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* dyn = dy + n * D;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t a = n * k + j;
      const int32_t s = assign_slot[a];
      if (s < 0) {
        if (dgates) dgates[a] = 0.f;
        continue;
      }
      const float g = gates[a];
      float* dst = dys + static_cast<int64_t>(s) * D;
      const float* src = ys + static_cast<int64_t>(s) * D;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < D; ++d) {
        dst[d] = g * dyn[d];
        dot += dyn[d] * src[d];
      }
      if (dgates) dgates[a] = dot;
    }
  }
}

void moe_gather_backward(const float* dxs, const int32_t* assign_slot, int64_t N, int64_t k, int64_t D, float* dx) {
  moe_combine(dxs, assign_slot, nullptr, N, k, D, dx);  // the sum of a token's slots: a combine with unit gates
}

void moe_swiglu_experts_fwd(const float* xs, const int64_t* offsets, const MoeExpertWeights& w, float* hg, float* hu,
                            float* act, float* ys, MoeSchedule sched) {
  const int64_t H = w.H, D = w.D;
  const std::vector<int64_t> experts = active_experts(offsets, w.E);
  const bool par = run_parallel(sched, offsets[w.E], experts.size());
  for_experts(experts, par, [&](int64_t e) {
    const int64_t o = offsets[e], c = offsets[e + 1] - o;
    gemm_rows(c, H, D, xs + o * D, D, expert_ptr(w.gate, e, H * D, w.dtype), w.dtype, true, D, hg + o * H, H, 0.f);
    gemm_rows(c, H, D, xs + o * D, D, expert_ptr(w.up, e, H * D, w.dtype), w.dtype, true, D, hu + o * H, H, 0.f);
    swiglu_fwd(hg + o * H, hu + o * H, act + o * H, c * H);
    gemm_rows(c, D, H, act + o * H, H, expert_ptr(w.down, e, D * H, w.dtype), w.dtype, true, H, ys + o * D, D, 0.f);
  });
}

void moe_swiglu_experts_bwd(const float* xs, const int64_t* offsets, const MoeExpertWeights& w, const float* hg,
                            const float* hu, const float* act, const float* dys, float* dxs, float* dwg, float* dwu,
                            float* dwd, float* dact, float* dhg, float* dhu, MoeSchedule sched) {
  SW_CHECK(w.dtype == DType::f32, "moe", "the experts' backward needs f32 weights");
  const int64_t H = w.H, D = w.D, E = w.E;
  const float* wg = static_cast<const float*>(w.gate);
  const float* wu = static_cast<const float*>(w.up);
  const float* wd = static_cast<const float*>(w.down);
  // Experts no token chose get an exact zero gradient.
  for (int64_t e = 0; e < E; ++e) {
    if (offsets[e + 1] > offsets[e]) continue;
    if (dwg) std::memset(dwg + e * H * D, 0, sizeof(float) * H * D);
    if (dwu) std::memset(dwu + e * H * D, 0, sizeof(float) * H * D);
    if (dwd) std::memset(dwd + e * D * H, 0, sizeof(float) * D * H);
  }
  const std::vector<int64_t> experts = active_experts(offsets, E);
  const bool par = run_parallel(sched, offsets[E], experts.size());
  for_experts(experts, par, [&](int64_t e) {
    const int64_t o = offsets[e], c = offsets[e + 1] - o;
    const float* xs_e = xs + o * D;
    const float* dys_e = dys + o * D;
    // dact = dys Wd_e (Wd_e [D, H]); dWd_e = dys^T act.
    gemm_rows(c, H, D, dys_e, D, wd + e * D * H, DType::f32, false, H, dact + o * H, H, 0.f);
    if (dwd) gemm_tn_rows(c, D, H, dys_e, D, act + o * H, H, dwd + e * D * H, H);
    swiglu_bwd(hg + o * H, hu + o * H, dact + o * H, dhg + o * H, dhu + o * H, c * H);
    // dxs = dhg Wg_e + dhu Wu_e (W [H, D]); dWg_e = dhg^T xs, dWu_e = dhu^T xs.
    if (dxs) {
      gemm_rows(c, D, H, dhg + o * H, H, wg + e * H * D, DType::f32, false, D, dxs + o * D, D, 0.f);
      gemm_rows(c, D, H, dhu + o * H, H, wu + e * H * D, DType::f32, false, D, dxs + o * D, D, 1.f);
    }
    if (dwg) gemm_tn_rows(c, H, D, dhg + o * H, H, xs_e, D, dwg + e * H * D, D);
    if (dwu) gemm_tn_rows(c, H, D, dhu + o * H, H, xs_e, D, dwu + e * H * D, D);
  });
}

}  // namespace sw::kernels
