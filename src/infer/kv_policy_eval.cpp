#include "infer/kv_policy_eval.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "autograd/variable.h"
#include "core/error.h"

namespace sw::infer {

namespace {

// Writes every field of a policy into a mixer's JSON object (the config's own field list).
struct FieldWriter {
  nlohmann::json& out;
  template <class T>
  void operator()(const char* name, T& value, const char*) {
    out[name] = value;
  }
};

// Next-token log-probabilities' pieces of one row of logits: logsumexp and the argmax.
struct RowScore {
  double logsumexp = 0;
  int64_t argmax = 0;
};

RowScore score_row(const float* logits, int64_t vocab) {
  const float* best = std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - *best);
  return {*best + std::log(sum), best - logits};
}

}  // namespace

models::ModelConfig with_kv_policy(models::ModelConfig cfg, const nn::KvPolicyConfig& policy) {
  nn::validate_kv_policy(policy, "--kv-policy");
  int64_t set = 0;
  auto apply = [&](nlohmann::json& mixer) {
    if (!mixer.is_object() || mixer.value("type", "") != "attention") return;
    nn::KvPolicyConfig p = policy;
    FieldWriter w{mixer};
    p.visit(w);
    ++set;
  };
  if (cfg.has_schedule()) {
    for (auto& [name, mixer] : cfg.mixers.items()) apply(mixer);
  } else {
    apply(cfg.mixer);
  }
  SW_CHECK(set > 0 || !policy.active(), "kv_policy", "model ", cfg.name,
           " has no softmax-attention mixer (type \"attention\"): a KV-cache policy has nothing to act on");
  return cfg;
}

CachedLossResult cached_loss(models::LanguageModel& model, std::span<const int32_t> tokens, int64_t window,
                             int64_t scored, int64_t max_windows, int64_t batch) {
  SW_CHECK(window >= 1 && scored >= 1 && scored <= window, "kv_policy_eval", "scored ", scored,
           " must lie in [1, window ", window, "]");
  SW_CHECK(batch >= 1 && max_windows >= 1, "kv_policy_eval", "batch and max_windows must be >= 1");
  const int64_t available = (static_cast<int64_t>(tokens.size()) - 1) / window;
  const int64_t windows = std::min(available, max_windows);
  SW_CHECK(windows >= 1, "kv_policy_eval", "need at least ", window + 1, " tokens for one window, got ", tokens.size());
  const int64_t vocab = model.config().vocab_size, prefix = window - scored;
  NoGradGuard no_grad;
  CachedLossResult r;
  double nats = 0;
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    const int64_t B = std::min(batch, windows - w0);
    std::vector<int32_t> ids(B * (window + 1));
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(tokens.begin() + (w0 + b) * window, window + 1, ids.begin() + b * (window + 1));
    const Tensor all = Tensor::from_vector(ids, {B, window + 1});
    auto state = model.new_state(B);
    if (prefix > 0) model.hidden(all.slice(1, 0, prefix).contiguous(), state.get());
    for (int64_t t = prefix; t < window; ++t) {
      const Variable h = model.hidden(all.slice(1, t, t + 1).contiguous(), state.get());
      const std::vector<float> logits = model.logits(h.data().reshape({B, h.dim(2)})).to_floats();
      for (int64_t b = 0; b < B; ++b) {
        const float* row = logits.data() + b * vocab;
        nats += score_row(row, vocab).logsumexp - row[ids[b * (window + 1) + t + 1]];
      }
    }
    r.cache_bytes = std::max(r.cache_bytes, state->bytes() / B);
    r.tokens += B * scored;
  }
  r.loss = nats / static_cast<double>(r.tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

NeedleResult needle_probe(models::LanguageModel& model, std::span<const int32_t> text,
                          const std::function<std::vector<int32_t>(const std::string&)>& encode, int64_t length,
                          int64_t probes, uint64_t seed, int64_t key_chars) {
  SW_CHECK(probes >= 1 && key_chars >= 1 && key_chars <= 64, "needle", "probes >= 1 and key_chars in [1, 64]");
  std::mt19937_64 rng(seed);
  const int64_t vocab = model.config().vocab_size;
  NoGradGuard no_grad;
  NeedleResult r;
  r.length = length;
  int64_t hits = 0, total = 0;
  for (int64_t i = 0; i < probes; ++i) {
    std::string key;
    for (int64_t c = 0; c < key_chars; ++c) key += static_cast<char>('a' + rng() % 26);
    const std::vector<int32_t> needle = encode(" the pass key is " + key + ". "),
                               query = encode(" the pass key is "), key_ids = encode(key);
    const int64_t fixed = static_cast<int64_t>(needle.size() + query.size() + key_ids.size());
    const int64_t filler = length - fixed;
    SW_CHECK(filler >= 4, "needle", "length ", length, " leaves no room for text beside the ", fixed, " probe tokens");
    SW_CHECK(static_cast<int64_t>(text.size()) > filler + 1, "needle", "the text (", text.size(),
             " tokens) is shorter than one probe's filler (", filler, ")");
    const int64_t offset = static_cast<int64_t>(rng() % static_cast<uint64_t>(text.size() - filler));
    const int64_t at = static_cast<int64_t>(rng() % static_cast<uint64_t>(filler / 4 + 1));  // first quarter
    std::vector<int32_t> ids(text.begin() + offset, text.begin() + offset + at);
    ids.insert(ids.end(), needle.begin(), needle.end());
    ids.insert(ids.end(), text.begin() + offset + at, text.begin() + offset + filler);
    ids.insert(ids.end(), query.begin(), query.end());
    const int64_t prompt = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), key_ids.begin(), key_ids.end());
    auto state = model.new_state(1);
    const Tensor seq = Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())});
    Variable h = model.hidden(seq.slice(1, 0, prompt).contiguous(), state.get());
    for (size_t k = 0; k < key_ids.size(); ++k) {
      const Tensor last = h.data().slice(1, h.dim(1) - 1, h.dim(1)).contiguous().reshape({1, h.dim(2)});
      const std::vector<float> logits = model.logits(last).to_floats();
      hits += score_row(logits.data(), vocab).argmax == key_ids[k];
      ++total;
      if (k + 1 < key_ids.size()) h = model.hidden(seq.slice(1, prompt + k, prompt + k + 1).contiguous(), state.get());
    }
    ++r.probes;
  }
  r.accuracy = static_cast<double>(hits) / static_cast<double>(total);
  return r;
}

}  // namespace sw::infer
