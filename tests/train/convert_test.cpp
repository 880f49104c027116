// Sparse upcycling (train/convert.h): right after conversion the MoE computes the dense function
// (every expert a copy of the FFN, renormalised top-k gates summing to 1), so its loss equals the
// dense loss. fp32: the expert GEMMs run over gathered rows in another blocking than the dense
// GEMM and the gates sum to 1 within ~1e-7, so 1e-5 relative is a wide margin that still fails
// on any wrong copy (a transposed or missing weight moves the loss by > 1e-2).
#include <cmath>

#include "models/model_testing.h"
#include "models/presets.h"
#include "train/convert.h"

namespace sw::train {
namespace {

TEST(Upcycle, LossRightAfterConversionEqualsTheDenseLoss) {
  for (const char* name : {"transformer-tiny", "qwen3-next-tiny", "zamba-tiny"}) {
    models::ModelConfig cfg = models::resolve_preset(name);
    cfg.init_std = 0.2;  // far from uniform predictions, so a wrong copy shows
    models::LanguageModel dense(cfg);
    for (const char* score : {"softmax", "sigmoid"}) {
      UpcycleOptions o;
      o.n_experts = 8, o.top_k = 2, o.score = score;
      std::unique_ptr<models::LanguageModel> moe = upcycle(dense, o, name);
      Tensor ids = testing::random_ids(2, 40, cfg.vocab_size, 1), tgt = testing::random_ids(2, 40, cfg.vocab_size, 2);
      NoGradGuard g;
      const double ld = dense.loss(ids, tgt).item();
      // The MoE's loss includes its balance loss: compare the language-model part.
      o.aux_loss_coef = 0;
      std::unique_ptr<models::LanguageModel> plain = upcycle(dense, o, name);
      const double lm = plain->loss(ids, tgt).item();
      EXPECT_NEAR(lm, ld, 1e-5 * std::fabs(ld)) << name << " " << score;
      EXPECT_GT(moe->num_parameters(), dense.num_parameters()) << name;
      EXPECT_EQ(moe->config().family, "moe");
    }
  }
}

TEST(Upcycle, BadRequestsAreErrors) {
  models::LanguageModel dense(models::resolve_preset("transformer-tiny"));
  UpcycleOptions o;
  o.n_experts = 1;
  EXPECT_THROW(upcycle(dense, o, "x"), Error);
  o.n_experts = 4, o.top_k = 5;
  EXPECT_THROW(upcycle(dense, o, "x"), Error);
  o.top_k = 2, o.score = "relu";
  EXPECT_THROW(upcycle(dense, o, "x"), Error);
  models::ModelConfig ssm = models::resolve_preset("mamba2-tiny");
  ssm.ffn = {{"type", "none"}};
  try {
    upcycled_config(ssm, UpcycleOptions{}, "ssm.json");
    FAIL() << "a model without SwiGLU FFNs cannot be upcycled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no SwiGLU FFN"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sw::train
