// Model-level checks shared by the model tests: prefill logits == step-by-step decode logits.
#pragma once

#include <functional>
#include <random>
#include <string>

#include "autograd/gradcheck.h"
#include "io/tokenizer.h"
#include "models/language_model.h"
#include "testing.h"

namespace sw::testing {

// A module's forward as a gradcheck op over [x, its parameters in visit order]: each call puts the
// given values into the parameters, so finite differences move them.
inline OpFn module_op(nn::Module& m, std::function<Variable(const Variable&)> forward) {
  return [&m, forward](const std::vector<Variable>& v) {
    size_t i = 1;
    m.visit_parameters([&](const std::string&, nn::Parameter& p) { p.var = v[i++]; });
    return forward(v[0]);
  };
}

// Byte-tokenizer ids of `text` repeated `repeat` times (a small corpus for training tests).
inline std::vector<int32_t> text_tokens(const std::string& text, int repeat) {
  io::ByteTokenizer tok;
  std::string s;
  for (int i = 0; i < repeat; ++i) s += text;
  return tok.encode(s);
}

inline Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(b * t);
  for (auto& x : v) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return Tensor::from_vector(v, {b, t});
}

// The logits of every position from one stateless forward (the training form) must equal those
// from a stateful prefill of a prefix followed by one-token decode steps (the inference form: KV
// cache, latent cache, recurrent state, ...), for a batch of 2 and a length spanning several chunks.
inline ::testing::AssertionResult prefill_matches_decode(const models::ModelConfig& cfg, double atol, int64_t T = 45,
                                                         int64_t prefix = 7) {
  models::LanguageModel m(cfg);
  NoGradGuard g;
  Tensor ids = random_ids(2, T, cfg.vocab_size, 3);
  Tensor full = m.hidden(ids).data();
  auto logits_at = [&](const Tensor& h, int64_t t0, int64_t t1) {
    return m.logits(h.slice(1, t0, t1).contiguous().reshape({2 * (t1 - t0), cfg.d_model})).to_floats();
  };
  auto state = m.new_state(2);
  Tensor h0 = m.hidden(ids.slice(1, 0, prefix).contiguous(), state.get()).data();
  ::testing::AssertionResult r = all_close(logits_at(h0, 0, prefix), logits_at(full, 0, prefix), atol, 1e-4);
  if (!r) return r << " (prefill of " << prefix << " tokens)";
  for (int64_t t = prefix; t < T; ++t) {
    Tensor step = m.hidden(ids.slice(1, t, t + 1).contiguous(), state.get()).data();
    r = all_close(logits_at(step, 0, 1), logits_at(full, t, t + 1), atol, 1e-4);
    if (!r) return r << " (decode step at position " << t << ")";
  }
  if (state->position != T) return ::testing::AssertionFailure() << "state position " << state->position;
  return ::testing::AssertionSuccess();
}

// The logits of one stateless forward over sum(segments) tokens must equal those of the same tokens
// fed segment by segment to a stateful model (batch 2).
inline ::testing::AssertionResult segments_match_one_pass(const models::ModelConfig& cfg,
                                                          const std::vector<int64_t>& segments, double atol) {
  models::LanguageModel m(cfg);
  NoGradGuard g;
  int64_t T = 0;
  for (int64_t s : segments) T += s;
  Tensor ids = random_ids(2, T, cfg.vocab_size, 5);
  Tensor full = m.hidden(ids).data();
  auto logits_at = [&](const Tensor& h, int64_t t0, int64_t t1) {
    return m.logits(h.slice(1, t0, t1).contiguous().reshape({2 * (t1 - t0), cfg.d_model})).to_floats();
  };
  auto state = m.new_state(2);
  int64_t t0 = 0;
  for (int64_t s : segments) {
    Tensor h = m.hidden(ids.slice(1, t0, t0 + s).contiguous(), state.get()).data();
    ::testing::AssertionResult r = all_close(logits_at(h, 0, s), logits_at(full, t0, t0 + s), atol, 1e-4);
    if (!r) return r << " (segment at " << t0 << ", " << s << " tokens)";
    t0 += s;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace sw::testing
