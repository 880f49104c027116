// GEMM over oneDNN's matmul primitive.
//
//   C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b]      for b in [0, batch)
//
// op(X) is X or X^T. A and B may each be f32 or bf16 (bf16 x bf16 runs on AVX512-BF16 with fp32
// accumulation, or widened to f32 on CPUs without it; a mixed pair converts the f32 side to bf16
// first); C is always f32. Leading
// dimensions and batch strides are in elements, so views (a head slice of [B, T, H, D]) need no copy.
// Primitives are created once per distinct shape/stride/dtype/alpha/beta and cached: creating one
// costs ~10-100 us, more than a small GEMM.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace sw::kernels {

struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.f, beta = 0.f;
  const void* a = nullptr;  // op(A): [m, k]; A stored [m, k] (lda >= k) or, transposed, [k, m] (lda >= m)
  DType a_type = DType::f32;
  int64_t lda = 0;
  const void* b = nullptr;  // op(B): [k, n]; B stored [k, n] (ldb >= n) or, transposed, [n, k] (ldb >= k)
  DType b_type = DType::f32;
  int64_t ldb = 0;
  float* c = nullptr;  // [m, n], ldc >= n
  int64_t ldc = 0;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batch items (0 for B: shared)
};

void gemm(const GemmArgs& args);

// Plain row-major convenience: C[m,n] (+)= A[m,k] @ op(B), B [k,n] or (trans_b) [n,k].
void gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, bool trans_b, float* c,
              float beta = 0.f);

// True where oneDNN has a bf16 matmul on this CPU; elsewhere bf16 operands are widened to f32
// (exact) and the GEMM runs in f32: same results, f32 speed.
bool gemm_bf16_native();

// Number of distinct primitives created so far (tests check that repeated shapes reuse them).
int64_t gemm_primitive_count();

}  // namespace sw::kernels
