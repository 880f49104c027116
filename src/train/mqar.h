// Multi-query associative recall (MQAR), the recall probe of Zoology (Arora et al. 2023) and Based,
// built as Zoology's data/associative_recall.py `_mqar` does:
//   - keys are drawn without repetition from [1, V/2), values from [V/2, V); the first 2*K positions
//     hold the K pairs "k0 v0 k1 v1 ...";
//   - every key is queried once after the pairs: key i sits at position 2*K + 2*g_i, where the gaps
//     g_i are distinct, drawn from 0 .. (T - 2K)/2 - 1 with P(g) proportional to (g+1)^(a-1)
//     (power law, a = power_a; a = 1 is uniform, small a favours short distances);
//   - the target at a query key's position is its value; every other target is -1 (ignored);
//   - with random_non_queries every other input position (0 in the layout) gets a uniform token in
//     [0, V), which may by chance repeat a key (Zoology does the same; such repeats carry no target).
// Only the random-number generator differs (ours is std::mt19937_64), so the data is equal in
// distribution, not bit-equal, to Zoology's.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace sw::train {

struct MqarConfig {
  int64_t vocab_size = 8192;
  int64_t num_kv_pairs = 8;
  int64_t seq_len = 256;
  int64_t num_examples = 1000;
  uint64_t seed = 0;
  double power_a = 0.01;
  bool random_non_queries = true;
};

struct MqarData {
  Tensor inputs;   // i32 [N, T]
  Tensor targets;  // i32 [N, T]; -1 = ignore
};

// Throws sw::Error naming the field when the config cannot be built: needs 4*K <= T (room for the
// queries), K <= V/2 - 1 keys and K <= V - V/2 values, power_a > 0, N >= 1.
MqarData generate_mqar(const MqarConfig& config);

// Fraction of non-ignored targets (>= 0) that `predicted` matches exactly. Both i32 [N, T] of the
// same shape; throws sw::Error on a mismatch or when no target is non-ignored.
double mqar_accuracy(const Tensor& predicted, const Tensor& targets);

}  // namespace sw::train
