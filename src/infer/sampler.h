// Token samplers: greedy, temperature, top-k, top-p (nucleus) and a repetition penalty (CTRL style:
// logits of tokens already generated are divided by the penalty when positive, multiplied when
// negative). Seeded: the same seed and logits give the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace sw::infer {

struct SamplerConfig {
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  double repetition_penalty = 1.0;
  uint64_t seed = 1;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& cfg);
  // logits [vocab]; history: tokens seen so far (prompt and generated) for the repetition penalty.
  int32_t sample(const float* logits, int64_t vocab, const std::vector<int32_t>& history);

 private:
  SamplerConfig cfg_;
  std::mt19937_64 rng_;
};

}  // namespace sw::infer
