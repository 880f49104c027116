// MQAR: the construction of Zoology's _mqar (pairs, one query per key, targets only after query
// keys), the power-law placement of queries, determinism by seed, and the accuracy metric.
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "testing.h"
#include "train/mqar.h"

namespace sw::train {
namespace {

std::vector<int32_t> ints(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return {p, p + t.numel()};
}

// Checks every example of `d` against the layout of mqar.h and returns the gaps of its queries.
std::vector<int64_t> check_structure(const MqarConfig& c, const MqarData& d) {
  const int64_t V = c.vocab_size, K = c.num_kv_pairs, T = c.seq_len, N = c.num_examples;
  EXPECT_EQ(d.inputs.shape(), (Shape{N, T}));
  EXPECT_EQ(d.targets.shape(), (Shape{N, T}));
  EXPECT_EQ(d.inputs.dtype(), DType::i32);
  EXPECT_EQ(d.targets.dtype(), DType::i32);
  std::vector<int32_t> in = ints(d.inputs), tg = ints(d.targets);
  std::vector<int64_t> gaps;
  for (int64_t e = 0; e < N; ++e) {
    const int32_t* x = in.data() + e * T;
    const int32_t* y = tg.data() + e * T;
    std::map<int32_t, int32_t> value_of;
    std::set<int32_t> values;
    for (int64_t i = 0; i < K; ++i) {
      int32_t k = x[2 * i], v = x[2 * i + 1];
      EXPECT_TRUE(k >= 1 && k < V / 2) << "key " << k << " in example " << e;
      EXPECT_TRUE(v >= V / 2 && v < V) << "value " << v << " in example " << e;
      EXPECT_TRUE(value_of.emplace(k, v).second) << "repeated key " << k << " in example " << e;
      EXPECT_TRUE(values.insert(v).second) << "repeated value " << v << " in example " << e;
    }
    std::set<int32_t> queried;
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_TRUE(x[t] >= 0 && x[t] < V) << "input " << x[t] << " at " << t;
      if (y[t] < 0) {
        EXPECT_EQ(y[t], -1);
        if (!c.random_non_queries && t >= 2 * K) {
          EXPECT_EQ(x[t], 0) << "filler at " << t;
        }
        continue;
      }
      // A target sits on a query key, after the pairs, at an even offset, and is that key's value.
      EXPECT_GE(t, 2 * K);
      EXPECT_EQ((t - 2 * K) % 2, 0);
      auto it = value_of.find(x[t]);
      if (it == value_of.end()) {
        ADD_FAILURE() << "query " << x[t] << " at " << t << " is not a key of example " << e;
        continue;
      }
      EXPECT_EQ(y[t], it->second) << "example " << e << " position " << t;
      EXPECT_TRUE(queried.insert(x[t]).second) << "key " << x[t] << " queried twice";
      gaps.push_back((t - 2 * K) / 2);
    }
    EXPECT_EQ(queried.size(), static_cast<size_t>(K)) << "every key is queried once, example " << e;
  }
  return gaps;
}

TEST(Mqar, StructureMatchesZoology) {
  for (bool random_fill : {true, false}) {
    for (double a : {0.01, 1.0}) {
      MqarConfig c{.vocab_size = 128, .num_kv_pairs = 8, .seq_len = 64, .num_examples = 200, .seed = 5,
                   .power_a = a, .random_non_queries = random_fill};
      SCOPED_TRACE(::testing::Message() << "power_a " << a << " random fill " << random_fill);
      check_structure(c, generate_mqar(c));
    }
  }
  // The tightest fit: K = T/4 (every gap used) and K = V/2 - 1 (every key used), odd T.
  MqarConfig tight{.vocab_size = 18, .num_kv_pairs = 8, .seq_len = 33, .num_examples = 50, .seed = 1};
  std::vector<int64_t> gaps = check_structure(tight, generate_mqar(tight));
  EXPECT_EQ(*std::max_element(gaps.begin(), gaps.end()), 7);
}

TEST(Mqar, RandomFillReplacesOnlyFillers) {
  MqarConfig c{.vocab_size = 1024, .num_kv_pairs = 4, .seq_len = 128, .num_examples = 50, .seed = 9};
  c.random_non_queries = false;
  MqarData plain = generate_mqar(c);
  std::vector<int32_t> x = ints(plain.inputs);
  // With fill off, fillers are 0; with fill on they are random, so 0 should be rare (1/V each).
  int64_t zeros = std::count(x.begin(), x.end(), 0);
  EXPECT_EQ(zeros, c.num_examples * (c.seq_len - 3 * c.num_kv_pairs));
  c.random_non_queries = true;
  std::vector<int32_t> y = ints(generate_mqar(c).inputs);
  EXPECT_LT(std::count(y.begin(), y.end(), 0), zeros / 50);
}

TEST(Mqar, DeterministicBySeed) {
  MqarConfig c{.vocab_size = 512, .num_kv_pairs = 8, .seq_len = 128, .num_examples = 20, .seed = 3};
  MqarData a = generate_mqar(c), b = generate_mqar(c);
  EXPECT_EQ(ints(a.inputs), ints(b.inputs));
  EXPECT_EQ(ints(a.targets), ints(b.targets));
  c.seed = 4;
  MqarData other = generate_mqar(c);
  EXPECT_NE(ints(a.inputs), ints(other.inputs));
  EXPECT_NE(ints(a.targets), ints(other.targets));
}

TEST(Mqar, QueryGapsFollowThePowerLaw) {
  // One pair per example, so each gap is a single draw from P(g) ~ (g+1)^(a-1), g < 60.
  const int64_t T = 122, space = (T - 2) / 2, N = 20000;
  for (double a : {0.01, 0.5, 1.0}) {
    MqarConfig c{.vocab_size = 256, .num_kv_pairs = 1, .seq_len = T, .num_examples = N, .seed = 11, .power_a = a};
    std::vector<int64_t> gaps = check_structure(c, generate_mqar(c));
    ASSERT_EQ(gaps.size(), static_cast<size_t>(N));
    double norm = 0;
    for (int64_t g = 0; g < space; ++g) norm += std::pow(g + 1.0, a - 1);
    for (int64_t g : {0, 1, 10, 59}) {
      double p = std::pow(g + 1.0, a - 1) / norm;
      double freq = static_cast<double>(std::count(gaps.begin(), gaps.end(), g)) / N;
      // Binomial sampling error of a frequency over N draws: sd = sqrt(p(1-p)/N); 5 sd never fails
      // by chance in practice, while a wrong exponent or an off-by-one in g moves these by more.
      EXPECT_NEAR(freq, p, 5 * std::sqrt(p * (1 - p) / N)) << "power_a " << a << " gap " << g;
    }
  }
}

TEST(Mqar, BadConfigNamesTheField) {
  auto message = [](MqarConfig c) {
    try {
      generate_mqar(c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  MqarConfig ok{.vocab_size = 64, .num_kv_pairs = 4, .seq_len = 16, .num_examples = 1};
  EXPECT_NO_THROW(generate_mqar(ok));
  MqarConfig c = ok;
  c.seq_len = 15;  // 4 * 4 > 15
  EXPECT_NE(message(c).find("seq_len"), std::string::npos);
  c = ok;
  c.vocab_size = 9;  // keys [1, 4): only 3
  EXPECT_NE(message(c).find("vocab_size"), std::string::npos);
  c = ok;
  c.power_a = 0;
  EXPECT_NE(message(c).find("power_a"), std::string::npos);
  c = ok;
  c.num_examples = 0;
  EXPECT_NE(message(c).find("num_examples"), std::string::npos);
  c = ok;
  c.num_kv_pairs = 0;
  EXPECT_NE(message(c).find("num_kv_pairs"), std::string::npos);
}

TEST(MqarAccuracy, HandMadeCases) {
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{-1, 5, -1, 7, 3, -1, -1, -1}, {2, 4});
  auto acc = [&](std::vector<int32_t> pred) { return mqar_accuracy(Tensor::from_vector(pred, {2, 4}), targets); };
  // Three scored positions (5, 7, 3); predictions at ignored positions do not count.
  EXPECT_DOUBLE_EQ(acc({0, 5, 9, 0, 3, 1, 1, 1}), 2.0 / 3);
  EXPECT_DOUBLE_EQ(acc({-1, 5, -1, 7, 3, -1, -1, -1}), 1.0);
  EXPECT_DOUBLE_EQ(acc({5, 0, 7, 0, 0, 3, 3, 3}), 0.0);
  EXPECT_DOUBLE_EQ(acc({9, 5, 9, 8, 2, 9, 9, 9}), 1.0 / 3);
  // A strided view is read in logical order.
  Tensor tt = Tensor::from_vector(std::vector<int32_t>{-1, 3, 5, -1, -1, -1, 7, -1}, {4, 2}).transpose(0, 1);
  EXPECT_DOUBLE_EQ(mqar_accuracy(Tensor::from_vector(std::vector<int32_t>{0, 5, 0, 7, 3, 0, 0, 0}, {2, 4}), tt), 1.0);

  EXPECT_THROW(mqar_accuracy(Tensor::zeros({2, 3}, DType::i32), targets), Error);
  EXPECT_THROW(mqar_accuracy(Tensor::zeros({2, 4}, DType::f32), targets), Error);
  EXPECT_THROW(mqar_accuracy(targets, Tensor::full({2, 4}, -1, DType::i32)), Error);
}

TEST(MqarAccuracy, OracleScoresOneOnGeneratedData) {
  MqarConfig c{.vocab_size = 256, .num_kv_pairs = 16, .seq_len = 128, .num_examples = 30, .seed = 2};
  MqarData d = generate_mqar(c);
  // An oracle that remembers every pair of the sequence answers every query.
  std::vector<int32_t> x = ints(d.inputs), pred(x.size(), 0);
  for (int64_t e = 0; e < c.num_examples; ++e) {
    std::map<int32_t, int32_t> memory;
    for (int64_t i = 0; i < c.num_kv_pairs; ++i) memory[x[e * c.seq_len + 2 * i]] = x[e * c.seq_len + 2 * i + 1];
    for (int64_t t = 2 * c.num_kv_pairs; t < c.seq_len; ++t) {
      auto it = memory.find(x[e * c.seq_len + t]);
      if (it != memory.end()) pred[e * c.seq_len + t] = it->second;
    }
  }
  EXPECT_DOUBLE_EQ(mqar_accuracy(Tensor::from_vector(pred, {c.num_examples, c.seq_len}), d.targets), 1.0);
  EXPECT_LT(mqar_accuracy(Tensor::zeros({c.num_examples, c.seq_len}, DType::i32), d.targets), 0.01);
}

}  // namespace
}  // namespace sw::train
