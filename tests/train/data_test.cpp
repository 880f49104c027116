// Token datasets: the train/validation split, seeded random windows and their bit-exact resume from
// a saved state, and validation windows that cover the split exactly once.
#include <algorithm>
#include <numeric>
#include <set>

#include "core/error.h"
#include "testing.h"
#include "train/data.h"

namespace sw::train {
namespace {

// Tokens equal to their positions, so a window's content tells where it came from.
std::vector<int32_t> iota_tokens(int32_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<int32_t> ints(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return {p, p + t.numel()};
}

TEST(TokenDataset, SplitIsTheLastFraction) {
  TokenDataset d(iota_tokens(1000), 0.05);
  ASSERT_EQ(d.train().size(), 950u);
  ASSERT_EQ(d.validation().size(), 50u);
  EXPECT_EQ(d.train().back(), 949);
  EXPECT_EQ(d.validation().front(), 950);
  EXPECT_EQ(d.validation().back(), 999);
  EXPECT_EQ(TokenDataset(iota_tokens(1000), 0.1).validation().size(), 100u);
  EXPECT_EQ(TokenDataset(iota_tokens(10), 0.0).validation().size(), 0u);
  EXPECT_EQ(TokenDataset(iota_tokens(10), 0.19).validation().size(), 1u);  // floor(1.9)
}

TEST(TokenDataset, BadInputThrows) {
  EXPECT_THROW(TokenDataset({}, 0.05), Error);
  EXPECT_THROW(TokenDataset(iota_tokens(10), 1.0), Error);
  EXPECT_THROW(TokenDataset(iota_tokens(10), -0.1), Error);
  try {
    TokenDataset({1, 2, 300, 4}, 0.0, 260);
    FAIL() << "id 300 >= vocab 260 must throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("300"), std::string::npos) << m;
    EXPECT_NE(m.find("position 2"), std::string::npos) << m;
  }
  EXPECT_THROW(TokenDataset({1, -5}, 0.0), Error);
}

TEST(BatchSampler, WindowsAreTrainSlicesWithShiftedTargets) {
  TokenDataset d(iota_tokens(200), 0.25);  // train 0..149
  const int64_t B = 4, T = 16;
  BatchSampler s(d, B, T, 1);
  std::set<int32_t> starts;
  for (int step = 0; step < 500; ++step) {
    Batch b = s.next();
    ASSERT_EQ(b.inputs.dtype(), DType::i32);
    ASSERT_EQ(b.inputs.shape(), (Shape{B, T}));
    ASSERT_EQ(b.targets.shape(), (Shape{B, T}));
    std::vector<int32_t> in = ints(b.inputs), tg = ints(b.targets);
    for (int64_t r = 0; r < B; ++r) {
      int32_t start = in[r * T];
      starts.insert(start);
      for (int64_t j = 0; j < T; ++j) {
        ASSERT_EQ(in[r * T + j], start + j);       // consecutive tokens
        ASSERT_EQ(tg[r * T + j], start + j + 1);   // next-token targets
      }
      ASSERT_LT(start + T, 150);  // the last target stays inside the training part
    }
  }
  EXPECT_EQ(s.batches_drawn(), 500);
  // 2000 uniform draws over 134 offsets miss a given one with probability (133/134)^2000 ~ 3e-7,
  // so every offset, the first and the last included, must have been seen.
  EXPECT_EQ(starts.size(), 150u - T);
  EXPECT_EQ(*starts.begin(), 0);
  EXPECT_EQ(*starts.rbegin(), 150 - T - 1);
}

TEST(BatchSampler, SeedDeterminesBatches) {
  TokenDataset d(iota_tokens(5000));
  BatchSampler a(d, 3, 32, 42), b(d, 3, 32, 42), c(d, 3, 32, 43);
  bool differs = false;
  for (int i = 0; i < 5; ++i) {
    Batch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(ints(x.inputs), ints(y.inputs));
    EXPECT_EQ(ints(x.targets), ints(y.targets));
    differs |= ints(x.inputs) != ints(z.inputs);
  }
  EXPECT_TRUE(differs);
}

TEST(BatchSampler, StateRestoresBitExactly) {
  TokenDataset d(iota_tokens(5000));
  BatchSampler a(d, 2, 64, 7);
  for (int i = 0; i < 3; ++i) a.next();
  std::string saved = a.state();
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 5; ++i) expected.push_back(ints(a.next().inputs));

  BatchSampler b(d, 2, 64, 999);  // a different seed: the restored state must win
  b.restore(saved);
  EXPECT_EQ(b.batches_drawn(), 3);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ints(b.next().inputs), expected[i]) << "batch " << i;
  EXPECT_EQ(b.state(), a.state());
}

TEST(BatchSampler, RestoreRejectsForeignOrCorruptState) {
  TokenDataset d(iota_tokens(5000)), other(iota_tokens(4000));
  BatchSampler a(d, 2, 64, 7);
  std::string good = a.state();
  auto message = [](BatchSampler& s, const std::string& state) {
    try {
      s.restore(state);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  BatchSampler wrong_shape(d, 4, 64, 7), wrong_data(other, 2, 64, 7), fresh(d, 2, 64, 7);
  EXPECT_NE(message(wrong_shape, good).find("'batch'"), std::string::npos);
  EXPECT_NE(message(wrong_data, good).find("'train_tokens'"), std::string::npos);
  EXPECT_NE(message(fresh, "").find("speedwins-batch-sampler"), std::string::npos);
  EXPECT_NE(message(fresh, good.substr(0, good.size() / 2)).find("'rng'"), std::string::npos);
  EXPECT_NE(message(fresh, good + " 12").find("after field 'rng'"), std::string::npos);
  std::string renamed = good;
  renamed.replace(renamed.find("seed"), 4, "sead");
  EXPECT_NE(message(fresh, renamed).find("'seed'"), std::string::npos);
  // A failed restore leaves the sampler as it was.
  BatchSampler untouched(d, 2, 64, 7);
  EXPECT_EQ(ints(fresh.next().inputs), ints(untouched.next().inputs));
}

TEST(BatchSampler, BadArgumentsThrow) {
  TokenDataset d(iota_tokens(100), 0.5);  // 50 training tokens
  EXPECT_THROW(BatchSampler(d, 0, 8, 1), Error);
  EXPECT_THROW(BatchSampler(d, 1, 0, 1), Error);
  EXPECT_THROW(BatchSampler(d, 1, 50, 1), Error);  // needs 51 tokens
  EXPECT_NO_THROW(BatchSampler(d, 1, 49, 1));
}

TEST(UniformBelow, RangeAndBalance) {
  std::mt19937_64 rng(3);
  std::vector<int> counts(10);
  const int n = 100000;
  for (int i = 0; i < n; ++i) counts[uniform_below(rng, 10)]++;
  // Each count is Binomial(1e5, 0.1): sd = sqrt(1e5 * 0.1 * 0.9) ~ 95; 6 sd = 570 holds for a
  // correct sampler at any seed with overwhelming probability, and a modulo-biased or off-by-one
  // one (an empty bucket) fails.
  for (int c : counts) EXPECT_NEAR(c, n / 10, 570);
  for (int i = 0; i < 1000; ++i) {
    double u = uniform_unit(rng);
    ASSERT_TRUE(u >= 0 && u < 1) << u;
  }
  EXPECT_EQ(uniform_below(rng, 1), 0u);
}

// Collects, over every validation batch, which validation tokens were targets and checks that each
// input is the token before its target.
void check_validation_covers(int32_t n_tokens, double frac, int64_t B, int64_t T) {
  SCOPED_TRACE(::testing::Message() << "n " << n_tokens << " frac " << frac << " B " << B << " T " << T);
  TokenDataset d(iota_tokens(n_tokens), frac);
  const int32_t first = static_cast<int32_t>(d.train().size());
  const int64_t n_val = static_cast<int64_t>(d.validation().size());
  ValidationBatches v(d, B, T);
  EXPECT_EQ(v.num_targets(), n_val - 1);
  std::vector<int> seen(n_val, 0);
  int64_t rows = 0;
  for (int64_t i = 0; i < v.num_batches(); ++i) {
    Batch b = v.get(i);
    ASSERT_EQ(b.inputs.shape(), b.targets.shape());
    ASSERT_EQ(b.inputs.dim(1), T);
    ASSERT_LE(b.inputs.dim(0), B);
    if (i + 1 < v.num_batches()) {
      ASSERT_EQ(b.inputs.dim(0), B);
    }
    rows += b.inputs.dim(0);
    std::vector<int32_t> in = ints(b.inputs), tg = ints(b.targets);
    for (size_t k = 0; k < tg.size(); ++k) {
      if (tg[k] < 0) continue;
      ASSERT_GE(tg[k], first + 1);  // never a training token, never the first validation token
      ASSERT_LT(tg[k], first + n_val);
      ASSERT_EQ(in[k], tg[k] - 1);
      seen[tg[k] - first]++;
    }
    EXPECT_EQ(ints(v.get(i).inputs), in);  // deterministic
  }
  EXPECT_EQ(rows, v.num_windows());
  EXPECT_EQ(seen[0], 0);
  for (int64_t t = 1; t < n_val; ++t) ASSERT_EQ(seen[t], 1) << "validation token " << t;
}

TEST(ValidationBatches, CoverTheSplitExactlyOnce) {
  check_validation_covers(1000, 0.1, 2, 11);  // 100 tokens: 99 targets, ragged last window
  check_validation_covers(1000, 0.1, 3, 33);  // 99 targets = 3 windows exactly
  check_validation_covers(1000, 0.1, 4, 99);  // one window
  check_validation_covers(1000, 0.1, 4, 100);  // shorter than T + 1: padded
  check_validation_covers(1000, 0.1, 8, 500);
  check_validation_covers(1000, 0.002, 1, 4);  // two tokens, one target
}

TEST(ValidationBatches, PaddingAndErrors) {
  TokenDataset d(iota_tokens(100), 0.05);  // validation 95..99
  ValidationBatches v(d, 4, 8);
  ASSERT_EQ(v.num_batches(), 1);
  Batch b = v.get(0);
  EXPECT_EQ(ints(b.inputs), (std::vector<int32_t>{95, 96, 97, 98, 99, 0, 0, 0}));
  EXPECT_EQ(ints(b.targets), (std::vector<int32_t>{96, 97, 98, 99, -1, -1, -1, -1}));
  EXPECT_THROW(v.get(1), Error);
  EXPECT_THROW(v.get(-1), Error);
  EXPECT_THROW(ValidationBatches(TokenDataset(iota_tokens(100), 0.0), 1, 8), Error);
  EXPECT_THROW(ValidationBatches(d, 0, 8), Error);
}

}  // namespace
}  // namespace sw::train
