// MoEfication (train/moefication.h). With unit gates the experts partition the dense FFN's
// neurons, so top_k = n_experts must compute the dense model: fp32, the MoE sums E partial
// down-projections of H / E neurons where the dense GEMM sums all H in one blocking, which moves
// the loss by ~1e-7 relative; 1e-5 still fails on any misplaced neuron (a swapped row moves the
// loss by > 1e-3 at init_std 0.2). The clustering must recover planted co-activation groups
// exactly, and the router must be the ridge least-squares solution (its normal equations hold).
#include <cmath>
#include <random>
#include <set>

#include "models/model_testing.h"
#include "models/presets.h"
#include "nn/moe/moe.h"
#include "train/moefication.h"

namespace sw::train {
namespace {

TEST(Moefication, AllExpertsWithUnitGatesIsTheDenseModel) {
  for (const char* name : {"transformer-tiny", "zamba-tiny"}) {  // zamba: a shared block's FFN converted once
    models::ModelConfig cfg = models::resolve_preset(name);
    cfg.init_std = 0.2;
    models::LanguageModel dense(cfg);
    const Tensor calib = testing::random_ids(4, 32, cfg.vocab_size, 7);
    MoeficationOptions o;
    o.n_experts = 4, o.top_k = 4;
    std::vector<MoeficationLayer> report;
    std::unique_ptr<models::LanguageModel> moe = moefy(dense, calib, o, name, &report);
    ASSERT_FALSE(report.empty());
    for (const MoeficationLayer& l : report) {
      EXPECT_GE(l.tokens, 4 * 32) << l.name;  // and any meta tokens
      EXPECT_NEAR(l.router_mass, 1.0, 1e-9) << l.name;  // all experts kept: all the mass
      EXPECT_NEAR(l.oracle_mass, 1.0, 1e-9) << l.name;
    }
    EXPECT_EQ(moe->num_parameters() - dense.num_parameters(),
              static_cast<int64_t>(report.size()) * o.n_experts * cfg.d_model)  // the routers only
        << name;
    const Tensor ids = testing::random_ids(2, 40, cfg.vocab_size, 1), tgt = testing::random_ids(2, 40, cfg.vocab_size, 2);
    NoGradGuard g;
    const double ld = dense.loss(ids, tgt).item(), lm = moe->loss(ids, tgt).item();
    EXPECT_NEAR(lm, ld, 1e-5 * std::fabs(ld)) << name;

    // Fewer experts per token: a different function, and the router's top-k keeps no more mass
    // than the oracle's.
    o.top_k = 2;
    std::unique_ptr<models::LanguageModel> half = moefy(dense, calib, o, name, &report);
    for (const MoeficationLayer& l : report) {
      EXPECT_LE(l.router_mass, l.oracle_mass + 1e-12) << l.name;
      EXPECT_GE(l.oracle_mass, 0.5 - 1e-12) << l.name;  // the best 2 of 4 hold at least half
    }
    EXPECT_NE(half->loss(ids, tgt).item(), ld) << name;
    EXPECT_LT(half->active_parameters(), moe->active_parameters()) << name;
  }
}

TEST(Moefication, ClusteringRecoversPlantedCoactivationGroups) {
  // 24 neurons in 4 planted groups (a shuffled assignment); a token activates one group strongly
  // (|a| in [0.5, 1.5]) and every other neuron weakly (|a| < 0.05).
  const int64_t H = 24, E = 4, N = 400;
  std::mt19937_64 rng(3);
  std::vector<int32_t> planted(H);
  for (int64_t i = 0; i < H; ++i) planted[i] = static_cast<int32_t>(i % E);
  std::shuffle(planted.begin(), planted.end(), rng);
  std::uniform_real_distribution<float> strong(0.5f, 1.5f), weak(-0.05f, 0.05f);
  std::vector<float> a(N * H);
  for (int64_t n = 0; n < N; ++n) {
    const int32_t on = static_cast<int32_t>(rng() % E);
    for (int64_t i = 0; i < H; ++i) a[n * H + i] = planted[i] == on ? (n % 2 ? -1.f : 1.f) * strong(rng) : weak(rng);
  }
  for (uint64_t seed : {1u, 2u, 3u}) {
    const std::vector<int32_t> got = cluster_coactivation(Tensor::from_vector(a, {N, H}), E, 20, seed);
    ASSERT_EQ(got.size(), static_cast<size_t>(H));
    std::vector<int64_t> size(E, 0);
    for (int32_t g : got) ++size[g];
    for (int64_t s : size) EXPECT_EQ(s, H / E) << "balanced";
    // Same partition up to a relabelling: neurons share a cluster iff they share a planted group.
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < H; ++j) EXPECT_EQ(got[i] == got[j], planted[i] == planted[j]) << i << " " << j << " seed " << seed;
  }
}

TEST(Moefication, RouterSolvesTheRidgeNormalEquations) {
  const int64_t N = 64, D = 6, H = 8, E = 4;
  const std::vector<float> x = testing::random_floats(N * D, 11), a = testing::random_floats(N * H, 12);
  const std::vector<int32_t> group = {0, 1, 2, 3, 3, 2, 1, 0};
  const double ridge = 1e-2;
  const Tensor w = fit_router(Tensor::from_vector(x, {N, D}), Tensor::from_vector(a, {N, H}), group, E, ridge);
  ASSERT_EQ(w.shape(), (Shape{E, D}));
  const float* W = w.data<float>();
  // t[n][e] = sum_{i in e} |a|; lambda = ridge * mean(diag(X^T X)); gradient X^T (X W^T - T) + lambda W^T = 0.
  double trace = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) trace += static_cast<double>(x[n * D + d]) * x[n * D + d];
  const double lambda = ridge * trace / D;
  double worst = 0, scale = 0;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t d = 0; d < D; ++d) {
      double grad = lambda * W[e * D + d], xt = 0;
      for (int64_t n = 0; n < N; ++n) {
        double t = 0, pred = 0;
        for (int64_t i = 0; i < H; ++i)
          if (group[i] == e) t += std::fabs(a[n * H + i]);
        for (int64_t k = 0; k < D; ++k) pred += static_cast<double>(W[e * D + k]) * x[n * D + k];
        grad += x[n * D + d] * (pred - t);
        xt += std::fabs(x[n * D + d] * t);
      }
      worst = std::max(worst, std::fabs(grad)), scale = std::max(scale, xt);
    }
  // f32 weights of an f64 solve: the residual gradient is at f32 rounding of the terms it sums.
  EXPECT_LT(worst, 1e-5 * scale) << "worst |gradient| " << worst << " vs term scale " << scale;
}

TEST(Moefication, BadRequestsAreErrorsNamingTheProblem) {
  models::ModelConfig cfg = models::resolve_preset("transformer-tiny");
  models::LanguageModel dense(cfg);
  const Tensor calib = testing::random_ids(2, 16, cfg.vocab_size, 1);
  MoeficationOptions o;
  o.n_experts = 4, o.top_k = 5;
  EXPECT_THROW(moefy(dense, calib, o, "x"), Error);
  o.top_k = 2, o.n_experts = 7;  // does not divide the hidden width
  try {
    moefy(dense, calib, o, "dense.safetensors");
    FAIL() << "7 experts cannot split the hidden width " << cfg.resolved_ffn_hidden();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of --experts 7"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dense.safetensors"), std::string::npos) << e.what();
  }
  models::ModelConfig ssm = models::resolve_preset("mamba2-tiny");
  ssm.ffn = {{"type", "none"}};
  models::LanguageModel no_ffn(ssm);
  o.n_experts = 4;
  try {
    moefy(no_ffn, calib, o, "ssm.safetensors");
    FAIL() << "a model without SwiGLU FFNs cannot be MoEfied";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no SwiGLU FFN"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sw::train
