#include "core/tensor.h"
#include "kernels/gemm/gemm.h"
#include "testing.h"

namespace sw {
namespace {

// Naive f64 C = alpha * op(A) op(B) + beta * C0 over explicit strides.
std::vector<double> naive(const kernels::GemmArgs& g, const std::vector<float>& a, const std::vector<float>& b,
                          const std::vector<float>& c0) {
  std::vector<double> c(c0.begin(), c0.end());
  for (int64_t bb = 0; bb < g.batch; ++bb)
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < g.k; ++p) {
          double x = g.trans_a ? a[bb * g.stride_a + p * g.lda + i] : a[bb * g.stride_a + i * g.lda + p];
          double y = g.trans_b ? b[bb * g.stride_b + j * g.ldb + p] : b[bb * g.stride_b + p * g.ldb + j];
          s += x * y;
        }
        double& out = c[bb * g.stride_c + i * g.ldc + j];
        out = g.alpha * s + g.beta * out;
      }
  return c;
}

struct GemmCase {
  bool ta, tb;
  int64_t m, n, k, batch;
  float alpha, beta;
  bool shared_b;
};

class GemmAgainstNaive : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmAgainstNaive, F32) {
  GemmCase p = GetParam();
  kernels::GemmArgs g;
  g.trans_a = p.ta, g.trans_b = p.tb, g.m = p.m, g.n = p.n, g.k = p.k, g.alpha = p.alpha, g.beta = p.beta;
  g.batch = p.batch;
  // Padded leading dimensions: the wrapper must honour strides, not assume packing.
  g.lda = (p.ta ? p.m : p.k) + 3, g.ldb = (p.tb ? p.k : p.n) + 5, g.ldc = p.n + 2;
  g.stride_a = (p.ta ? p.k : p.m) * g.lda, g.stride_b = p.shared_b ? 0 : (p.tb ? p.n : p.k) * g.ldb;
  g.stride_c = p.m * g.ldc;
  std::vector<float> a = testing::random_floats(g.stride_a * p.batch, 1);
  std::vector<float> b = testing::random_floats((p.shared_b ? 1 : p.batch) * (p.tb ? p.n : p.k) * g.ldb, 2);
  std::vector<float> c = testing::random_floats(g.stride_c * p.batch, 3);
  std::vector<double> want = naive(g, a, b, c);
  g.a = a.data(), g.b = b.data(), g.c = c.data();
  kernels::gemm(g);
  // fp32 accumulation over k terms of size <= 1: error ~ sqrt(k) * 6e-8 * k^0.5; 1e-5 * (1 + k/64) is generous and tight.
  double tol = 1e-5 * (1.0 + p.k / 64.0);
  for (int64_t bb = 0; bb < p.batch; ++bb)
    for (int64_t i = 0; i < p.m; ++i)
      EXPECT_TRUE(testing::all_close(c.data() + bb * g.stride_c + i * g.ldc, want.data() + bb * g.stride_c + i * g.ldc,
                                     p.n, tol, 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmAgainstNaive,
                         ::testing::Values(GemmCase{false, false, 7, 5, 3, 1, 1.f, 0.f, false},
                                           GemmCase{false, true, 17, 33, 65, 1, 1.f, 0.f, false},
                                           GemmCase{true, false, 9, 11, 13, 1, 0.5f, 1.f, false},
                                           GemmCase{true, true, 1, 64, 100, 1, 1.f, 0.f, false},
                                           GemmCase{false, true, 5, 6, 7, 4, 1.f, 0.f, false},
                                           GemmCase{false, false, 5, 6, 7, 3, 2.f, 0.5f, true}));

TEST(Gemm, Bf16OperandsAccumulateInF32) {
  int64_t m = 33, n = 20, k = 300;
  std::vector<float> a = testing::random_floats(m * k, 4), b = testing::random_floats(k * n, 5);
  Tensor ta = Tensor::from_vector(a, {m, k}).to(DType::bf16), tb = Tensor::from_vector(b, {k, n}).to(DType::bf16);
  std::vector<float> ar = ta.to_floats(), br = tb.to_floats();  // the exact bf16 values
  std::vector<float> c(m * n);
  kernels::GemmArgs g;
  g.m = m, g.n = n, g.k = k, g.a = ta.raw_data(), g.a_type = DType::bf16, g.lda = k;
  g.b = tb.raw_data(), g.b_type = DType::bf16, g.ldb = n, g.c = c.data(), g.ldc = n;
  kernels::gemm(g);
  std::vector<float> zero(m * n, 0.f);
  kernels::GemmArgs r = g;
  std::vector<double> want = naive(r, ar, br, zero);
  // Products of bf16 values are exact in fp32; only the fp32 sum rounds: sqrt(k) * 6e-8 * sum|terms|.
  EXPECT_TRUE(testing::all_close(c, want, 2e-5, 1e-5));
  // A mixed pair (f32 A, bf16 B) rounds A to bf16 first: same result as above.
  std::vector<float> c2(m * n);
  g.a = a.data(), g.a_type = DType::f32, g.c = c2.data();
  kernels::gemm(g);
  EXPECT_TRUE(testing::all_close(c2, c, 0, 0));
}

TEST(Gemm, PrimitivesAreCachedByShape) {
  std::vector<float> a(8 * 8, 1.f), b(8 * 8, 1.f), c(8 * 8);
  kernels::gemm_f32(8, 8, 8, a.data(), b.data(), false, c.data());
  int64_t n0 = kernels::gemm_primitive_count();
  for (int i = 0; i < 10; ++i) kernels::gemm_f32(8, 8, 8, a.data(), b.data(), false, c.data());
  EXPECT_EQ(kernels::gemm_primitive_count(), n0);
  kernels::gemm_f32(8, 4, 8, a.data(), b.data(), false, c.data());
  EXPECT_EQ(kernels::gemm_primitive_count(), n0 + 1);
  EXPECT_FLOAT_EQ(c[0], 8.f);
}

}  // namespace
}  // namespace sw
