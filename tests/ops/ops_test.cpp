// Behaviour of ops beyond the op table: bad input errors, state carry, chunking invariance.
#include "kernels/ref/basic_ref.h"
#include "ops/ops.h"
#include "testing.h"

namespace sw {
namespace {

Variable rand_var(Shape s, uint64_t seed, bool grad = false) {
  return Variable(Tensor::from_vector(testing::random_floats(shape_numel(s), seed), s), grad);
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(OpsErrors, NameTheOpAndTheShapes) {
  Variable x = rand_var({4, 8}, 1), w = rand_var({5, 7}, 2);
  std::string m = error_of([&] { ops::linear(x, w); });
  EXPECT_NE(m.find("[linear]"), std::string::npos) << m;
  EXPECT_NE(m.find("f32[4, 8]"), std::string::npos) << m;
  EXPECT_NE(m.find("f32[5, 7]"), std::string::npos) << m;
  m = error_of([&] { ops::add(rand_var({3, 4}, 1), rand_var({2, 4}, 2)); });
  EXPECT_NE(m.find("[add]"), std::string::npos) << m;
  m = error_of([&] { ops::embedding(rand_var({10, 4}, 1), Tensor::from_vector(std::vector<int32_t>{1, 10}, {2})); });
  EXPECT_NE(m.find("token id 10"), std::string::npos) << m;
  m = error_of([&] { ops::rope(rand_var({1, 2, 1, 6}, 1), Tensor::from_vector(std::vector<int32_t>{0, 1}, {2}), 5, 1e4); });
  EXPECT_NE(m.find("[rope]"), std::string::npos) << m;
  m = error_of([&] {
    ops::fused_cross_entropy(rand_var({2, 4}, 1), rand_var({6, 4}, 2), Tensor::from_vector(std::vector<int32_t>{0, 6}, {2}));
  });
  EXPECT_NE(m.find("target 6"), std::string::npos) << m;
  m = error_of([&] { ops::rmsnorm(x, &w); });
  EXPECT_NE(m.find("[rmsnorm]"), std::string::npos) << m;
}

TEST(OpsBroadcast, EmptyDimsStayEmpty) {
  // [1, 0, 4] * [4] is empty ([1, 0, 4]), not [1, 1, 4]: a zero-length sequence flows through.
  Variable x(Tensor::zeros({1, 0, 4})), w = rand_var({4}, 1);
  EXPECT_EQ(ops::mul(x, w).shape(), (Shape{1, 0, 4}));
  EXPECT_EQ(ops::add(w, x).shape(), (Shape{1, 0, 4}));
  EXPECT_THROW(ops::add(rand_var({2, 3}, 1), rand_var({0, 3}, 2)), Error);
}

TEST(CausalConv1d, SegmentsWithCarriedStateEqualOnePass) {
  int64_t B = 2, T = 23, C = 70, W = 4;  // C spans two channel blocks
  Variable x = rand_var({B, T, C}, 3), w = rand_var({C, W}, 4), b = rand_var({C}, 5);
  Tensor full_state;
  std::vector<float> full = ops::causal_conv1d(x, w, &b, nullptr, &full_state).data().to_floats();
  // Three segments, the first shorter than the kernel width and the second a one-token decode step,
  // carrying the state; each must equal the matching slice of the one-pass output.
  Variable state(Tensor::zeros({B, W - 1, C}));
  int64_t cuts[] = {0, 2, 3, 23};
  for (int s = 0; s < 3; ++s) {
    Variable xs(x.data().slice(1, cuts[s], cuts[s + 1]).contiguous());
    Tensor next;
    Tensor y = ops::causal_conv1d(xs, w, &b, &state, &next).data();
    state = Variable(next);
    Tensor want = Tensor::from_vector(full, {B, T, C}).slice(1, cuts[s], cuts[s + 1]).contiguous();
    // Same arithmetic in the same order per output element: bit-identical.
    EXPECT_TRUE(testing::all_close(y.to_floats(), want.to_floats(), 0, 0)) << "segment " << s;
  }
  EXPECT_TRUE(testing::all_close(state.data().to_floats(), full_state.to_floats(), 0, 0));
}

TEST(CrossEntropy, ChunkSizesDoNotChangeTheResult) {
  Variable h = rand_var({37, 16}, 6, true), w = rand_var({101, 16}, 7, true);
  std::vector<int32_t> t(37);
  for (int i = 0; i < 37; ++i) t[i] = (i * 13) % 101;
  Tensor targets = Tensor::from_vector(t, {37});
  ops::CrossEntropyOptions a, b;
  a.row_block = 1024, a.vocab_chunk = 4096;
  b.row_block = 5, b.vocab_chunk = 7;
  Variable la = ops::fused_cross_entropy(h, w, targets, a);
  la.backward();
  std::vector<float> gh = h.grad().to_floats(), gw = w.grad().to_floats();
  h.zero_grad(), w.zero_grad();
  Variable lb = ops::fused_cross_entropy(h, w, targets, b);
  lb.backward();
  // Different summation orders in fp32: 1e-6 relative.
  EXPECT_NEAR(la.item(), lb.item(), 1e-6 * std::fabs(la.item()));
  EXPECT_TRUE(testing::all_close(h.grad().to_floats(), gh, 1e-7, 1e-5));
  EXPECT_TRUE(testing::all_close(w.grad().to_floats(), gw, 1e-7, 1e-5));
}

}  // namespace
}  // namespace sw
