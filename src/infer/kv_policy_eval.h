// What a KV-cache policy (nn/attention/kv_policy.h) costs in quality, measured on a trained model
// beside the full cache: perplexity of held-out text scored through the inference path (the cache
// evicts as it goes), a needle (passkey) retrieval probe, and the cache bytes held.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "models/language_model.h"
#include "nn/attention/kv_policy.h"

namespace sw::infer {

// The config with `policy` set on every softmax-attention mixer (single-mixer or schedule form).
// sw::Error when the model has no attention mixer (the policies are attention-cache policies).
models::ModelConfig with_kv_policy(models::ModelConfig cfg, const nn::KvPolicyConfig& policy);

struct CachedLossResult {
  double loss = 0;         // mean nats per scored token
  double perplexity = 0;
  int64_t tokens = 0;      // scored tokens
  int64_t cache_bytes = 0; // largest inference state held (one sequence), at the end of a window
};

// Windows of `window` + 1 consecutive tokens of `tokens` (non-overlapping, at most max_windows,
// `batch` per forward): the first `window - scored` tokens are prefilled in one call, then each of
// the last `scored` inputs is fed as one decode step and its next token scored. So the scored tokens
// see the cache as the policy left it, exactly as in generation.
CachedLossResult cached_loss(models::LanguageModel& model, std::span<const int32_t> tokens, int64_t window,
                             int64_t scored, int64_t max_windows, int64_t batch = 4);

struct NeedleResult {
  double accuracy = 0;  // fraction of the repeated passkey's tokens that greedy argmax predicts
  int64_t probes = 0;
  int64_t length = 0;   // tokens per probe
};

// Passkey retrieval: `probes` sequences of `length` tokens of `text` (held-out, from seeded offsets),
// where "the pass key is <key>. " is written at a seeded point of the first quarter and the
// sequence ends with "... the pass key is <key>"; the prefix up to the second key is prefilled, the
// key is then decoded one token at a time by teacher forcing, and each of its tokens counts as
// retrieved when it is the argmax of the step before (a key of `key_chars` random lowercase letters:
// chance is about 1/26 per token).
NeedleResult needle_probe(models::LanguageModel& model, std::span<const int32_t> text,
                          const std::function<std::vector<int32_t>(const std::string&)>& encode, int64_t length,
                          int64_t probes, uint64_t seed, int64_t key_chars = 8);

}  // namespace sw::infer
