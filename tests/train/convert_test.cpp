// Sparse upcycling (train/convert.h): right after conversion the MoE computes the dense function
// (every expert a copy of the FFN, renormalised top-k gates summing to 1), so its loss equals the
// dense loss. fp32: the expert GEMMs run over gathered rows in another blocking than the dense
// GEMM and the gates sum to 1 within ~1e-7, so 1e-5 relative is a wide margin that still fails
// on any wrong copy (a transposed or missing weight moves the loss by > 1e-2).
#include <cmath>
#include <map>

#include "models/model_testing.h"
#include "models/presets.h"
#include "nn/moe/moe.h"
#include "train/convert.h"
#include "train/expert_merge.h"

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

TEST(ExpertMerge, MergingEqualExpertsKeepsTheFunction) {
  // An upcycled model's experts are equal copies; with renormalised top-k gates any merge of them
  // computes the same function, so the loss is unchanged (same 1e-5 argument as upcycling).
  models::ModelConfig cfg = models::resolve_preset("transformer-tiny");
  cfg.init_std = 0.2;
  models::LanguageModel dense(cfg);
  UpcycleOptions o;
  o.n_experts = 8, o.top_k = 2, o.aux_loss_coef = 0;
  std::unique_ptr<models::LanguageModel> moe = upcycle(dense, o, "tiny");
  Tensor ids = testing::random_ids(2, 40, cfg.vocab_size, 1), tgt = testing::random_ids(2, 40, cfg.vocab_size, 2);
  NoGradGuard g;
  const double before = moe->loss(ids, tgt).item();
  for (int64_t M : {1, 3, 4}) {
    std::unique_ptr<models::LanguageModel> merged = merge_experts(*moe, M, {}, "tiny");
    EXPECT_NEAR(merged->loss(ids, tgt).item(), before, 1e-5 * std::fabs(before)) << M;
    EXPECT_LT(merged->num_parameters(), moe->num_parameters());
    auto* f = dynamic_cast<nn::MoeFfn*>(merged->blocks()[0]->ffn());
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->config().n_experts, M);
    EXPECT_EQ(f->config().top_k, std::min<int64_t>(2, M));
  }
  EXPECT_THROW(merge_experts(*moe, 8, {}, "tiny"), Error);  // not fewer
  EXPECT_THROW(merge_experts(dense, 2, {}, "tiny"), Error);  // nothing to merge
}

TEST(ExpertMerge, GroupsAroundDominantsAndAveragesByLoad) {
  // Router rows: experts 0, 1 point along a, experts 2, 3 along b (3 exactly, 2 with a little a).
  // Loads 0.4, 0.1, 0.2, 0.3: expert 0 is the most used dominant, expert 3 the one least like it.
  const int64_t E = 4, D = 4, H = 2;
  const std::vector<float> rows = {1, 0, 0, 0, 0.9f, 0.1f, 0, 0, 0.2f, 1, 0, 0, 0, 1, 0, 0};
  const std::vector<double> loads = {0.4, 0.1, 0.2, 0.3};
  const ExpertGroups g = group_experts(rows, E, D, loads, 2);
  EXPECT_EQ(g.dominant, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(g.members, (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}}));

  // The merged layer: weights averaged by load within each group, dominant router rows kept.
  models::ModelConfig mc = models::resolve_preset("moe-tiny");
  mc.d_model = D, mc.n_layers = 1, mc.ffn_hidden = H, mc.vocab_size = 16;
  mc.mixer = {{"type", "attention"}, {"n_heads", 1}};
  mc.ffn = {{"type", "moe"}, {"n_experts", E}, {"top_k", 2}, {"expert_hidden", H}};
  mc = models::parse_model_config(models::model_config_to_json(mc), "test");
  models::LanguageModel m(mc);
  auto* f = dynamic_cast<nn::MoeFfn*>(m.blocks()[0]->ffn());
  ASSERT_NE(f, nullptr);
  std::map<std::string, std::vector<float>> before;
  f->visit_parameters([&](const std::string& n, nn::Parameter& p) {
    if (n == "router.weight") p.var.mutable_data().copy_from(Tensor::from_vector(rows, {E, D}));
    before[n] = p.var.data().to_floats();
  });
  std::unique_ptr<models::LanguageModel> merged = merge_experts(m, 2, {loads}, "test");
  auto* mf = dynamic_cast<nn::MoeFfn*>(merged->blocks()[0]->ffn());
  ASSERT_NE(mf, nullptr);
  mf->visit_parameters([&](const std::string& n, nn::Parameter& p) {
    const std::vector<float> got = p.var.data().to_floats();
    const std::vector<float>& w = before[n];
    if (n == "router.weight") {
      EXPECT_EQ(got, (std::vector<float>{1, 0, 0, 0, 0, 1, 0, 0}));
    } else if (n == "w_gate" || n == "w_up" || n == "w_down") {
      const size_t per = w.size() / E;
      for (size_t i = 0; i < per; ++i) {
        EXPECT_NEAR(got[i], (0.4 * w[i] + 0.1 * w[per + i]) / 0.5, 1e-6) << n << " " << i;
        EXPECT_NEAR(got[per + i], (0.2 * w[2 * per + i] + 0.3 * w[3 * per + i]) / 0.5, 1e-6) << n << " " << i;
      }
    }
  });
}

}  // namespace
}  // namespace sw::train
