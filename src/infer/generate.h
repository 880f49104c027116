// Generation: prefill the prompt through the model's state (KV cache, recurrent state, ... behind
// one interface), then decode one token at a time with O(1) state growth per token for recurrent
// layers. Tokens are streamed to a callback as they are produced.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "infer/sampler.h"
#include "models/language_model.h"

namespace sw::infer {

struct GenerateConfig {
  int64_t max_new_tokens = 128;
  SamplerConfig sampler;
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one of these (e.g. EOS)
};

struct GenerateStats {
  int64_t prompt_tokens = 0, new_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t state_bytes = 0;
};

// on_token(id) is called for every generated token; returning false stops generation (stop strings
// are checked by the caller, which sees the decoded text).
GenerateStats generate(models::LanguageModel& model, const std::vector<int32_t>& prompt, const GenerateConfig& cfg,
                       const std::function<bool(int32_t)>& on_token);

}  // namespace sw::infer
