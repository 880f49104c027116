#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

#include "core/error.h"

namespace sw::infer {

Sampler::Sampler(const SamplerConfig& cfg) : cfg_(cfg), rng_(cfg.seed) {
  SW_CHECK(cfg.temperature >= 0, "sampler", "temperature must be >= 0, got ", cfg.temperature);
  SW_CHECK(cfg.top_k >= 0, "sampler", "top_k must be >= 0, got ", cfg.top_k);
  SW_CHECK(cfg.top_p > 0 && cfg.top_p <= 1, "sampler", "top_p must be in (0, 1], got ", cfg.top_p);
  SW_CHECK(cfg.repetition_penalty > 0, "sampler", "repetition_penalty must be > 0, got ", cfg.repetition_penalty);
}

int32_t Sampler::sample(const float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  std::vector<double> l(logits, logits + vocab);
  if (cfg_.repetition_penalty != 1.0) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t t : seen)
      if (t >= 0 && t < vocab) l[t] = l[t] > 0 ? l[t] / cfg_.repetition_penalty : l[t] * cfg_.repetition_penalty;
  }
  if (cfg_.temperature == 0) return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  std::vector<int32_t> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  // Candidates in descending logit order (ties by id, so the order is deterministic).
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  int64_t keep = cfg_.top_k > 0 ? std::min<int64_t>(cfg_.top_k, vocab) : vocab;
  std::vector<double> p(keep);
  double mx = l[idx[0]] / cfg_.temperature, sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += p[i] = std::exp(l[idx[i]] / cfg_.temperature - mx);
  if (cfg_.top_p < 1.0) {  // smallest prefix whose probability mass reaches top_p
    double acc = 0;
    int64_t n = 0;
    while (n < keep && acc < cfg_.top_p * sum) acc += p[n++];
    keep = std::max<int64_t>(1, n);
    sum = acc;
  }
  double r = std::uniform_real_distribution<double>(0, sum)(rng_), acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (r < acc) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace sw::infer
