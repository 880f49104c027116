// MQAR data generation and its accuracy metric (see mqar.h).
#include "train/mqar.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "train/data.h"

namespace sw::train {
namespace {

// k distinct values from [lo, hi) in random order: Floyd's algorithm picks the set in O(k^2)
// without touching the whole range (V may be large), then a shuffle makes the order uniform.
void sample_distinct(std::mt19937_64& rng, int64_t lo, int64_t hi, int64_t k, std::vector<int32_t>& out) {
  out.clear();
  int64_t n = hi - lo;
  for (int64_t j = n - k; j < n; ++j) {
    int64_t t = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(j + 1)));
    int32_t v = static_cast<int32_t>(lo + t);
    out.push_back(std::find(out.begin(), out.end(), v) == out.end() ? v : static_cast<int32_t>(lo + j));
  }
  for (int64_t i = k - 1; i > 0; --i) std::swap(out[i], out[uniform_below(rng, static_cast<uint64_t>(i + 1))]);
}

}  // namespace

MqarData generate_mqar(const MqarConfig& c) {
  const int64_t V = c.vocab_size, K = c.num_kv_pairs, T = c.seq_len, N = c.num_examples;
  SW_CHECK(K >= 1 && T >= 1 && N >= 1, "mqar", "num_kv_pairs ", K, ", seq_len ", T, ", num_examples ", N,
           ": expected all >= 1");
  SW_CHECK(4 * K <= T, "mqar", "seq_len ", T, " is too short for num_kv_pairs ", K,
           ": expected seq_len >= 4 * num_kv_pairs (pairs plus room for the queries)");
  SW_CHECK(V <= (int64_t{1} << 31) - 1 && K <= V / 2 - 1 && K <= V - V / 2, "mqar", "vocab_size ", V,
           " has too few keys [1, V/2) or values [V/2, V) for num_kv_pairs ", K,
           ": expected vocab_size >= 2 * num_kv_pairs + 2 (and < 2^31)");
  SW_CHECK(c.power_a > 0 && std::isfinite(c.power_a), "mqar", "power_a ", c.power_a, ", expected a number > 0");

  const int64_t context = 2 * K, space = (T - context) / 2;
  // P(gap g) proportional to (g+1)^(a-1); Zoology's factor a cancels in the normalisation.
  std::vector<double> weight(space);
  for (int64_t g = 0; g < space; ++g) weight[g] = std::pow(static_cast<double>(g + 1), c.power_a - 1);

  MqarData d{Tensor::zeros({N, T}, DType::i32), Tensor::full({N, T}, -1, DType::i32)};
  std::mt19937_64 rng(c.seed);
  std::vector<int32_t> keys, values;
  std::vector<double> w(space);
  for (int64_t e = 0; e < N; ++e) {
    int32_t* in = d.inputs.data<int32_t>() + e * T;
    int32_t* tg = d.targets.data<int32_t>() + e * T;
    sample_distinct(rng, 1, V / 2, K, keys);
    sample_distinct(rng, V / 2, V, K, values);
    for (int64_t i = 0; i < K; ++i) {
      in[2 * i] = keys[i];
      in[2 * i + 1] = values[i];
    }
    // Distinct gaps by successive weighted draws, each taken gap's weight set to zero (the same
    // law as numpy's choice(replace=False, p=...)).
    w = weight;
    double total = 0;
    for (double x : w) total += x;
    for (int64_t i = 0; i < K; ++i) {
      double u = uniform_unit(rng) * total;
      int64_t g = 0;
      while (g < space - 1 && (w[g] == 0 || u >= w[g])) {
        u -= w[g];
        ++g;
      }
      while (w[g] == 0) --g;  // u landed past the last live gap by rounding: take the last live one
      total -= w[g];
      w[g] = 0;
      int64_t pos = context + 2 * g;
      in[pos] = keys[i];
      tg[pos] = values[i];
    }
    if (c.random_non_queries)
      for (int64_t t = 0; t < T; ++t)
        if (in[t] == 0) in[t] = static_cast<int32_t>(uniform_below(rng, static_cast<uint64_t>(V)));
  }
  return d;
}

double mqar_accuracy(const Tensor& predicted, const Tensor& targets) {
  SW_CHECK(predicted.dtype() == DType::i32 && targets.dtype() == DType::i32, "mqar_accuracy",
           "expected i32 tensors, got ", predicted.describe(), " and ", targets.describe());
  SW_CHECK(predicted.shape() == targets.shape(), "mqar_accuracy", "predicted ", shape_str(predicted.shape()),
           " and targets ", shape_str(targets.shape()), ": expected the same shape");
  Tensor p = predicted.contiguous(), t = targets.contiguous();
  const int32_t* pp = p.data<int32_t>();
  const int32_t* tp = t.data<int32_t>();
  int64_t counted = 0, correct = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (tp[i] < 0) continue;
    ++counted;
    correct += pp[i] == tp[i];
  }
  SW_CHECK(counted > 0, "mqar_accuracy", "targets ", shape_str(targets.shape()),
           " are all ignored (< 0): expected at least one target");
  return static_cast<double>(correct) / static_cast<double>(counted);
}

}  // namespace sw::train
