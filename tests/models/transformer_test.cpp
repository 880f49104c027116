// The Transformer baseline end to end at tiny size: loss at initialisation, prefill == decode for
// every KV cache type, bad configs rejected with the field named.
#include <cmath>

#include "models/language_model.h"
#include "models/presets.h"
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

// Logits of every position from one prefill must equal those from feeding the tokens one at a time
// (prefill of a prefix, then decode steps) through the KV cache.
void expect_prefill_equals_decode(const std::string& kv_dtype, double atol) {
  ModelConfig cfg = resolve_preset("transformer-tiny");
  cfg.mixer["kv_dtype"] = kv_dtype;
  cfg.init_std = 0.2;  // larger weights than init make attention patterns sharp enough to matter
  LanguageModel m(cfg);
  NoGradGuard g;
  int64_t T = 37;
  Tensor ids = random_ids(2, T, 260, 3);
  Tensor full = m.hidden(ids).data();
  auto st = m.new_state(2);
  int64_t prefix = 5;
  Tensor h0 = m.hidden(ids.slice(1, 0, prefix).contiguous(), st.get()).data();
  EXPECT_TRUE(testing::all_close(h0.to_floats(), full.slice(1, 0, prefix).contiguous().to_floats(), 1e-5, 1e-5));
  for (int64_t t = prefix; t < T; ++t) {
    Tensor step = m.hidden(ids.slice(1, t, t + 1).contiguous(), st.get()).data();
    Tensor want = full.slice(1, t, t + 1).contiguous();
    Tensor lg = m.logits(step.reshape({2, cfg.d_model})), lw = m.logits(want.reshape({2, cfg.d_model}));
    EXPECT_TRUE(testing::all_close(lg.to_floats(), lw.to_floats(), atol, 1e-4)) << "kv " << kv_dtype << " position " << t;
  }
  EXPECT_EQ(st->position, T);
  EXPECT_EQ(st->bytes() > 0, true);
}

// fp32 cache: same math in a different order (tiled vs split-KV): ~1e-6 on logits of size ~1.
TEST(Transformer, PrefillEqualsDecodeF32Cache) { expect_prefill_equals_decode("f32", 2e-5); }
// bf16 cache: keys/values rounded to 8 bits of mantissa (2^-9 relative); logits move by ~1e-2.
TEST(Transformer, PrefillEqualsDecodeBf16Cache) { expect_prefill_equals_decode("bf16", 3e-2); }

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
