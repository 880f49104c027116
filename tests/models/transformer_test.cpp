// The Transformer baseline end to end at tiny size: loss at initialisation, prefill == decode for
// every KV cache type, bad configs rejected with the field named.
#include <cmath>

#include "models/language_model.h"
#include "models/presets.h"
#include "models/model_testing.h"
#include "testing.h"

namespace sw::models {
namespace {

Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(b * t);
  for (auto& x : v) x = static_cast<int32_t>(rng() % vocab);
  return Tensor::from_vector(v, {b, t});
}

TEST(Transformer, LossAtInitIsNearUniform) {
  LanguageModel m(resolve_preset("transformer-tiny"));
  Tensor ids = random_ids(2, 33, 260, 1), tgt = random_ids(2, 33, 260, 2);
  Variable l = m.loss(ids, tgt);
  // Small init (std 0.02) gives near-uniform predictions: loss ~ ln(260) = 5.56.
  EXPECT_NEAR(l.item(), std::log(260.0), 0.1);
  l.backward();
  int64_t with_grad = 0;
  for (nn::Parameter* p : m.parameters()) with_grad += p->var.grad().defined();
  EXPECT_EQ(with_grad, static_cast<int64_t>(m.parameters().size()));
}

// bf16 KV cache: keys/values rounded to 8 significant bits (2^-9 relative); logits move by ~1e-2.
TEST(Transformer, PrefillEqualsDecodeBf16Cache) {
  ModelConfig cfg = resolve_preset("transformer-tiny");
  cfg.mixer["kv_dtype"] = "bf16";
  cfg.init_std = 0.2;
  EXPECT_TRUE(testing::prefill_matches_decode(cfg, 3e-2));
}

// KIVI caches: the error of decode logits against the exact prefill, measured and bounded. The
// cache keeps the last 32 tokens exact, so positions past 64 read quantised keys and values.
TEST(Transformer, QuantisedKvCacheErrorIsReported) {
  for (const char* kv : {"int8", "int4", "int2"}) {
    ModelConfig cfg = resolve_preset("transformer-tiny");
    cfg.mixer["kv_dtype"] = kv;
    cfg.init_std = 0.2;
    LanguageModel m(cfg);
    NoGradGuard g;
    int64_t T = 100;
    Tensor ids = testing::random_ids(1, T, 260, 9);
    Tensor full = m.hidden(ids).data();
    auto st = m.new_state(1);
    m.hidden(ids.slice(1, 0, 1).contiguous(), st.get());
    double max_err = 0, max_logit = 0;
    for (int64_t t = 1; t < T; ++t) {
      Tensor h = m.hidden(ids.slice(1, t, t + 1).contiguous(), st.get()).data();
      std::vector<float> a = m.logits(h.reshape({1, cfg.d_model})).to_floats();
      std::vector<float> b = m.logits(full.slice(1, t, t + 1).contiguous().reshape({1, cfg.d_model})).to_floats();
      for (size_t i = 0; i < a.size(); ++i) {
        max_err = std::max(max_err, static_cast<double>(std::fabs(a[i] - b[i])));
        max_logit = std::max(max_logit, static_cast<double>(std::fabs(b[i])));
      }
    }
    std::printf("KIVI %s KV cache: max |logit error| %.3g (logits up to %.3g) over %lld decode steps, state %lld bytes\n",
                kv, max_err, max_logit, static_cast<long long>(T - 1), static_cast<long long>(st->bytes()));
    // Quantisation steps of range/255, range/15 and range/3 (with the last 32 tokens exact) bound the
    // logit error at 0.1%, 1% and 5% of the logit range (measured ~0.005%, 0.1%, 0.45%).
    double bound = std::string(kv) == "int8" ? 0.001 * max_logit : std::string(kv) == "int4" ? 0.01 * max_logit : 0.05 * max_logit;
    EXPECT_LT(max_err, bound) << kv;
    EXPECT_GT(max_err, 0.0) << kv << ": a quantised cache must differ from the exact one";
  }
}

// causal false: every position sees every token. Changing the last token moves the first
// position's hidden state (it cannot under causal attention), and the model refuses a KV-cache
// state, since decoding one token at a time is undefined when earlier tokens see later ones.
TEST(Transformer, BidirectionalAttentionSeesLaterTokensAndHasNoDecode) {
  for (bool causal : {true, false}) {
    ModelConfig cfg = resolve_preset("transformer-tiny");
    cfg.mixer["causal"] = causal;
    cfg.init_std = 0.2;
    LanguageModel m(cfg);
    NoGradGuard g;
    Tensor ids = random_ids(1, 12, 260, 3), changed = ids.clone();
    changed.data<int32_t>()[11] = (changed.data<int32_t>()[11] + 1) % 260;
    const std::vector<float> a = m.hidden(ids).data().slice(1, 0, 1).contiguous().to_floats();
    const std::vector<float> b = m.hidden(changed).data().slice(1, 0, 1).contiguous().to_floats();
    EXPECT_EQ(a == b, causal) << "causal " << causal;
    EXPECT_EQ(m.blocks()[0]->mixer().causal(), causal);
    auto state = m.new_state(1);
    if (causal) {
      EXPECT_NO_THROW(m.hidden(ids, state.get()));
    } else {
      EXPECT_THROW(m.hidden(ids, state.get()), Error);
    }
  }
  ModelConfig sparse = resolve_preset("transformer-tiny");
  sparse.mixer["causal"] = false, sparse.mixer["sparse_block"] = 4;
  EXPECT_THROW(LanguageModel{sparse}, Error);
}

TEST(Transformer, BadConfigsNameTheField) {
  nlohmann::json j = nlohmann::json::parse(R"({"d_model": 64, "n_layers": 2, "mixer": {"type": "attention", "n_head": 4}})");
  try {
    parse_model_config(j, "my.json");
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("my.json.mixer"), std::string::npos) << m;
    EXPECT_NE(m.find("n_head"), std::string::npos) << m;
  }
  j = nlohmann::json::parse(R"({"d_model": "wide"})");
  EXPECT_THROW(parse_model_config(j, "x.json"), Error);
  j = nlohmann::json::parse(R"({"mixer": {"type": "nope"}})");
  EXPECT_THROW(parse_model_config(j, "x.json"), Error);
  EXPECT_THROW(resolve_preset("no-such-preset"), Error);
}

}  // namespace
}  // namespace sw::models
