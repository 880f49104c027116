#include "core/allocator.h"
#include "core/tensor.h"
#include "testing.h"

namespace sw {
namespace {

TEST(Tensor, ShapeStridesAndViews) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_TRUE(t.is_contiguous());
  Tensor tr = t.transpose(0, 1);
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.to_floats(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor col = t.slice(1, 1, 3);
  EXPECT_EQ(col.to_floats(), (std::vector<float>{1, 2, 4, 5}));
  EXPECT_EQ(t.select(0, 1).to_floats(), (std::vector<float>{3, 4, 5}));
  EXPECT_EQ(t.reshape({3, -1}).shape(), (Shape{3, 2}));
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 2, 3}));
  // Views share storage: writing through one is visible in the other.
  col.fill(9);
  EXPECT_EQ(t.to_floats(), (std::vector<float>{0, 9, 9, 3, 9, 9}));
  EXPECT_EQ(tr.contiguous().reshape({6}).to_floats(), (std::vector<float>{0, 3, 9, 9, 9, 9}));
}

TEST(Tensor, ErrorsNameTheOpAndShapes) {
  Tensor t = Tensor::zeros({2, 3});
  try {
    t.transpose(0, 1).reshape({6});
    FAIL() << "reshape of a non-contiguous view must throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[reshape]"), std::string::npos) << m;
    EXPECT_NE(m.find("[3, 2]"), std::string::npos) << m;
  }
  EXPECT_THROW(t.reshape({4, 2}), Error);
  EXPECT_THROW(t.slice(1, 2, 5), Error);
  EXPECT_THROW(t.dim(5), Error);
  EXPECT_THROW(t.data<double>(), Error);
  EXPECT_THROW(Tensor::from_vector(std::vector<float>{1, 2}, {3}), Error);
}

TEST(Tensor, Bf16RoundTripAndRounding) {
  // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie, rounded to even (1.0); 1 + 3*2^-8 rounds up.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_TRUE(std::isinf(bf16_to_f32(f32_to_bf16(INFINITY))));
  std::vector<float> v = testing::random_floats(1000, 1);
  Tensor b = Tensor::from_vector(v, {10, 100}).to(DType::bf16);
  EXPECT_EQ(b.dtype(), DType::bf16);
  EXPECT_EQ(b.nbytes(), 2000u);
  std::vector<float> back = b.to(DType::f32).to_floats();
  // bf16 has 8 significant bits: values in [2^e, 2^(e+1)) are spaced 2^(e-7) apart, so one
  // round-to-nearest errs by at most 2^(e-8) <= 2^-8 |x|.
  for (size_t i = 0; i < v.size(); ++i) EXPECT_LE(std::fabs(back[i] - v[i]), std::fabs(v[i]) * (1.0 / 256));
}

TEST(Allocator, CountsLiveAndPeakBytes) {
  MemoryStats s0 = memory_stats();
  reset_peak_memory();
  {
    Tensor a = Tensor::empty({1000});  // 4000 bytes
    Tensor b = Tensor::empty({500});   // 2000 bytes
    EXPECT_EQ(memory_stats().live_bytes - s0.live_bytes, 6000);
  }
  MemoryStats s1 = memory_stats();
  EXPECT_EQ(s1.live_bytes, s0.live_bytes);
  EXPECT_GE(s1.peak_bytes - s0.live_bytes, 6000);
  reset_peak_memory();
  EXPECT_EQ(memory_stats().peak_bytes, memory_stats().live_bytes);
}

}  // namespace
}  // namespace sw
