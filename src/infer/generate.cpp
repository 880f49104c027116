#include "infer/generate.h"

#include <algorithm>

#include "core/timer.h"

namespace sw::infer {

GenerateStats generate(models::LanguageModel& model, const std::vector<int32_t>& prompt, const GenerateConfig& cfg,
                       const std::function<bool(int32_t)>& on_token) {
  SW_CHECK(!prompt.empty(), "generate", "the prompt is empty (nothing to condition on)");
  int64_t vocab = model.config().vocab_size;
  for (int32_t t : prompt)
    SW_CHECK(t >= 0 && t < vocab, "generate", "prompt token ", t, " is outside the vocabulary [0, ", vocab, ")");
  NoGradGuard no_grad;
  GenerateStats st;
  st.prompt_tokens = static_cast<int64_t>(prompt.size());
  auto state = model.new_state(1);
  Sampler sampler(cfg.sampler);
  std::vector<int32_t> history = prompt;
  int64_t d = model.config().d_model;
  double t0 = now_seconds();
  Tensor h = model.hidden(Tensor::from_vector(prompt, {1, st.prompt_tokens}), state.get()).data();
  Tensor last = h.slice(1, st.prompt_tokens - 1, st.prompt_tokens).contiguous().reshape({1, d});
  st.prefill_seconds = now_seconds() - t0;
  t0 = now_seconds();
  for (int64_t i = 0; i < cfg.max_new_tokens; ++i) {
    Tensor logits = model.logits(last);
    int32_t next = sampler.sample(logits.data<float>(), vocab, history);
    history.push_back(next);
    ++st.new_tokens;
    bool go_on = on_token(next);
    if (!go_on || std::find(cfg.stop_tokens.begin(), cfg.stop_tokens.end(), next) != cfg.stop_tokens.end()) break;
    if (i + 1 == cfg.max_new_tokens) break;
    last = model.hidden(Tensor::from_vector(std::vector<int32_t>{next}, {1, 1}), state.get()).data().reshape({1, d});
  }
  st.decode_seconds = now_seconds() - t0;
  st.state_bytes = state->bytes();
  return st;
}

}  // namespace sw::infer
