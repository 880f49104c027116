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
