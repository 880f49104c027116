#include "autograd/gradcheck.h"
#include "core/allocator.h"
#include "ops/ops.h"
#include "testing.h"

namespace sw {
namespace {

Variable param(std::vector<float> v, Shape s) { return Variable(Tensor::from_vector(v, s), true); }

TEST(Autograd, ChainRuleAndSharedInputs) {
  // y = sum(x * x + x) -> dy/dx = 2x + 1; x is used three times.
  Variable x = param({1, -2, 3}, {3});
  Variable y = ops::sum(ops::add(ops::mul(x, x), x));
  EXPECT_DOUBLE_EQ(y.item(), 1 + 4 + 9 + 1 - 2 + 3);
  y.backward();
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{3, -3, 7}));
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Variable x = param({1, 2}, {2});
  for (int i = 0; i < 3; ++i) ops::sum(ops::scale(x, 2.0)).backward();
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{6, 6}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradRecordsNothing) {
  Variable x = param({1, 2}, {2});
  Variable y;
  {
    NoGradGuard g;
    y = ops::scale(x, 3.0);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
  Variable z = ops::scale(x, 3.0);
  EXPECT_TRUE(z.requires_grad());
}

TEST(Autograd, ConstantsGetNoGradient) {
  Variable x = param({1, 2}, {2});
  Variable c(Tensor::from_vector(std::vector<float>{5, 7}, {2}));
  ops::sum(ops::mul(x, c)).backward();
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{5, 7}));
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, BackwardFreesSavedActivations) {
  // A chain of ops each saving its input: after backward, the saved tensors are released while the
  // graph object itself is still referenced by y.
  Variable x(Tensor::full({256, 256}, 0.5), true);
  int64_t before = memory_stats().live_bytes;
  Variable h = x;
  for (int i = 0; i < 8; ++i) h = ops::silu(h);
  Variable y = ops::sum(h);
  int64_t with_graph = memory_stats().live_bytes;
  EXPECT_GE(with_graph - before, 8 * 256 * 256 * 4);  // 8 saved inputs
  y.backward();
  h = Variable();
  int64_t after = memory_stats().live_bytes;
  // What remains: x's gradient (256 KiB) and y itself; the 8 activations are gone.
  EXPECT_LE(after - before, 256 * 256 * 4 + 4096);
  EXPECT_THROW(y.backward(), Error);  // the graph was consumed
}

TEST(Autograd, MultiOutputNodesAndUnusedOutputs) {
  Variable x = param({1, 2, 3, 4}, {2, 2});
  Variable a = ops::slice(x, 0, 0, 1), b = ops::slice(x, 0, 1, 2);
  ops::sum(ops::mul(a, b)).backward();
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{3, 4, 1, 2}));
}

TEST(GradCheck, CatchesAWrongBackward) {
  // An op whose backward is deliberately off by a factor must fail the checker: the checker can fail.
  OpFn wrong = [](const std::vector<Variable>& v) {
    Tensor y = v[0].data().clone();
    return record1("wrong", v, y, [](const std::vector<Tensor>& g) -> std::vector<Tensor> {
      Tensor d = g[0].clone();
      float* p = d.data<float>();
      for (int64_t i = 0; i < d.numel(); ++i) p[i] *= 1.01f;
      return {d};
    });
  };
  RefFn identity = [](const std::vector<std::vector<double>>& v) { return v[0]; };
  Tensor x = Tensor::from_vector(testing::random_floats(10, 3), {10});
  GradCheckResult r = grad_check(wrong, identity, {x});
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.report.empty());
}

}  // namespace
}  // namespace sw
