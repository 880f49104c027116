// MLA: the absorbed inference form (latent cache) equals the materialised training form; the cache
// holds d_c + d_rope floats per token and layer, reported beside MHA and GQA of equal width.
#include <cstdio>

#include "models/model_testing.h"
#include "models/presets.h"
#include "nn/attention/mla.h"

namespace sw::models {
namespace {

TEST(Mla, AbsorbedPrefillEqualsMaterialisedForm) {
  ModelConfig cfg = resolve_preset("mla-tiny");
  cfg.init_std = 0.2;
  LanguageModel m(cfg);
  NoGradGuard g;
  Tensor ids = testing::random_ids(2, 40, cfg.vocab_size, 5);
  Tensor training = m.hidden(ids).data();  // materialised per-head K and V, tiled kernel
  auto st = m.new_state(2);
  Tensor absorbed = m.hidden(ids, st.get()).data();  // W_UK / W_UV folded, latent cache
  // Same math in another association order (fp32): ~1e-6 relative on hidden states of size ~1.
  EXPECT_TRUE(testing::all_close(absorbed.to_floats(), training.to_floats(), 2e-5, 1e-4));
}

TEST(Mla, CacheBytesPerTokenBesideMhaAndGqa) {
  ModelConfig mla = resolve_preset("mla-small"), gqa = resolve_preset("transformer-small");
  ModelConfig mha = gqa;
  mha.mixer["n_kv_heads"] = 4;
  LanguageModel a(mla), b(mha), c(gqa);
  int64_t per_tok_mla = a.state_bytes(1), per_tok_mha = b.state_bytes(1), per_tok_gqa = c.state_bytes(1);
  std::printf("cache bytes per token (4 layers, d_model 128): MLA %lld, MHA %lld, GQA(2 kv heads) %lld\n",
              static_cast<long long>(per_tok_mla), static_cast<long long>(per_tok_mha),
              static_cast<long long>(per_tok_gqa));
  // MLA: (d_c 48 + d_rope 16) floats x 4 layers; MHA: 2 x 128 floats x 4 layers; GQA: half of MHA.
  EXPECT_EQ(per_tok_mla, (48 + 16) * 4 * 4);
  EXPECT_EQ(per_tok_mha, 2 * 128 * 4 * 4);
  EXPECT_EQ(per_tok_gqa, per_tok_mha / 2);
  auto st = a.new_state(1);
  NoGradGuard g;
  a.hidden(testing::random_ids(1, 300, 260, 1), st.get());
  // The live cache holds exactly the latent rows (capacity may exceed the length).
  auto* lc = static_cast<nn::LatentCache*>(st->layers[0].get());
  EXPECT_EQ(lc->length(), 300);
  EXPECT_EQ(lc->rows().dim(2), 48 + 16);
}

TEST(Mla, TrainsAndBackpropagates) {
  LanguageModel m(resolve_preset("mla-tiny"));
  Tensor ids = testing::random_ids(2, 20, 260, 7), tgt = testing::random_ids(2, 20, 260, 8);
  Variable l = m.loss(ids, tgt);
  l.backward();
  for (nn::Parameter* p : m.parameters()) EXPECT_TRUE(p->var.grad().defined()) << p->name;
}

}  // namespace
}  // namespace sw::models
