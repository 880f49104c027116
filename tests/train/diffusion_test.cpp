// Masked diffusion (LLaDA): the loss == an f64 reference on fixed masks and p (pretraining and SFT),
// its gradient along itself matches a central difference, the mask draw is reproducible from
// (seed, step, micro, row) and independent per row with masked fraction ~ p, the training loss and
// the evaluation estimator both average to the exactly enumerated bound of a 4-token sequence,
// evaluate() reports that bound over the AR targets, training lowers it and resumes bit-exactly, and
// config errors name the field.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "io/tokenizer.h"
#include "models/presets.h"
#include "train/diffusion_loss.h"
#include "train/trainer.h"
#include "models/model_testing.h"
#include "testing.h"

namespace sw::train {
namespace {

models::ModelConfig tiny_diffusion(double init_std = 0.02) {
  models::ModelConfig c = models::resolve_preset("mdlm-tiny");
  c.init_std = init_std;
  return c;
}

Tensor ids_of(const std::vector<int32_t>& v, int64_t B, int64_t T) { return Tensor::from_vector(v, {B, T}); }

std::vector<int32_t> random_tokens(int64_t n, uint64_t seed, int32_t below = 256) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(below));
  return v;
}

// f64 log-softmax cross-entropy of every position of `noisy` [B, T] from the model's f32 logits.
std::vector<double> ce_all(models::LanguageModel& m, const Tensor& noisy, const Tensor& clean) {
  NoGradGuard g;
  const int64_t B = noisy.dim(0), T = noisy.dim(1), V = m.config().vocab_size;
  const std::vector<float> lg = m.logits(m.hidden(noisy).data().reshape({B * T, m.config().d_model})).to_floats();
  std::vector<double> ce(static_cast<size_t>(B * T));
  const int32_t* x = clean.data<int32_t>();
  for (int64_t i = 0; i < B * T; ++i) {
    double mx = -1e300, z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(lg[i * V + v]));
    for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(lg[i * V + v]) - mx);
    ce[i] = mx + std::log(z) - static_cast<double>(lg[i * V + x[i]]);
  }
  return ce;
}

// ---- the loss against an f64 reference ----

// The fused LM head accumulates in f32 over 260 logits and a handful of rows; against f64 CE from the
// same f32 logits the sum differs by ~1e-7 relative: 1e-5 leaves room without hiding a wrong weight
// (a missing 1/p or a wrong normaliser changes the loss by > 10%).
TEST(DiffusionLoss, PretrainingLossEqualsF64Reference) {
  models::LanguageModel m(tiny_diffusion(0.2));
  const int64_t B = 3, T = 8;
  Tensor clean = ids_of(random_tokens(B * T, 7), B, T);
  std::vector<uint8_t> masked = {1, 0, 0, 1, 1, 0, 1, 0,   // row 0: 4 masked
                                 0, 0, 0, 0, 0, 0, 0, 1,   // row 1: 1 masked
                                 1, 1, 1, 1, 1, 1, 1, 1};  // row 2: all masked
  const std::vector<double> p = {0.45, 0.1, 0.93};
  DiffusionDraw d = make_diffusion_draw(clean, masked, p, m.config().resolved_mask_id());
  const double got = masked_diffusion_loss(m, d).item();
  const std::vector<double> ce = ce_all(m, d.noisy, clean);
  double want = 0;
  for (int64_t i = 0; i < B * T; ++i)
    if (masked[i]) want += ce[i] / p[i / T];
  want /= static_cast<double>(B * T);
  EXPECT_NEAR(got, want, 1e-5 * want) << "got " << got << ", f64 reference " << want;
  // The noisy ids carry the mask id exactly where masked; targets only there.
  for (int64_t i = 0; i < B * T; ++i) {
    EXPECT_EQ(d.noisy.data<int32_t>()[i], masked[i] ? 259 : clean.data<int32_t>()[i]);
    EXPECT_EQ(d.targets.data<int32_t>()[i], masked[i] ? clean.data<int32_t>()[i] : -1);
  }
}

// SFT (LLaDA GUIDELINES.md): prompts never masked; each row's sum of CE / p divided by its answer
// length T - prompt, then by B.
TEST(DiffusionLoss, SftLossEqualsF64ReferenceAndNeverMasksThePrompt) {
  models::LanguageModel m(tiny_diffusion(0.2));
  const int64_t B = 4, T = 16;
  Tensor clean = ids_of(random_tokens(B * T, 11), B, T);
  DiffusionLossOptions o;
  o.prompt_lengths = {3, 0, 10, 16};  // the last row is all prompt: it contributes nothing
  DiffusionDraw d = draw_forward_process(clean, 259, 5, 2, 0, o);
  const DiffusionDraw pre = draw_forward_process(clean, 259, 5, 2, 0);
  const int32_t* tg = d.targets.data<int32_t>();
  int64_t answer_masked = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      if (t < o.prompt_lengths[b]) EXPECT_EQ(tg[i], -1) << "prompt position " << t << " of row " << b << " masked";
      else EXPECT_EQ(tg[i], pre.targets.data<int32_t>()[i]) << "the answer's masks are the pretraining draw's";
      answer_masked += tg[i] >= 0;
    }
  ASSERT_GT(answer_masked, 3);
  EXPECT_EQ(d.p, pre.p);
  const double got = masked_diffusion_loss(m, d, o).item();
  const std::vector<double> ce = ce_all(m, d.noisy, clean);
  double want = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t answer = T - o.prompt_lengths[b];
    for (int64_t t = 0; t < T; ++t)
      if (tg[b * T + t] >= 0) want += ce[b * T + t] / d.p[b] / static_cast<double>(answer);
  }
  want /= static_cast<double>(B);
  EXPECT_NEAR(got, want, 1e-5 * want);
}

// The gradient of the loss (through the per-row weights, the gathered rows and the whole model):
// moving every parameter by +-eps along the normalised gradient g/|g| changes the loss by
// +-eps |g| to first order; the central difference has error O(eps^2) and the f32 forward ~1e-6 of
// a loss ~5, so with eps = 3e-3 the two agree to 2%.
TEST(DiffusionLoss, GradientMatchesCentralDifferenceAlongItself) {
  models::LanguageModel m(tiny_diffusion(0.1));
  const int64_t B = 2, T = 12;
  Tensor clean = ids_of(random_tokens(B * T, 3), B, T);
  DiffusionDraw d = draw_forward_process(clean, 259, 1, 0, 0);
  m.zero_grad();
  masked_diffusion_loss(m, d).backward();
  double norm2 = 0;
  std::vector<std::vector<float>> grads;
  for (nn::Parameter* p : m.parameters()) {
    grads.push_back(p->var.grad().defined() ? p->var.grad().to_floats() : std::vector<float>(p->var.numel(), 0.f));
    for (float g : grads.back()) norm2 += static_cast<double>(g) * g;
  }
  const double norm = std::sqrt(norm2), eps = 3e-3;
  ASSERT_GT(norm, 1e-3);
  auto loss_at = [&](double s) {
    std::vector<std::vector<float>> saved;
    size_t k = 0;
    for (nn::Parameter* p : m.parameters()) {
      Tensor& w = p->var.mutable_data();
      saved.push_back(w.to_floats());
      float* pw = w.data<float>();
      for (int64_t i = 0; i < w.numel(); ++i) pw[i] += static_cast<float>(s * grads[k][i] / norm);
      ++k;
    }
    NoGradGuard g;
    const double l = masked_diffusion_loss(m, d).item();
    k = 0;
    for (nn::Parameter* p : m.parameters()) {
      std::copy(saved[k].begin(), saved[k].end(), p->var.mutable_data().data<float>());
      ++k;
    }
    return l;
  };
  const double fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
  EXPECT_NEAR(fd, norm, 0.02 * norm) << "directional derivative " << fd << " vs |grad| " << norm;
}

// One AdamW step on a fixed batch and draw lowers the loss.
TEST(DiffusionLoss, OneOptimizerStepLowersIt) {
  models::LanguageModel m(tiny_diffusion());
  Tensor clean = ids_of(random_tokens(4 * 32, 9), 4, 32);
  DiffusionDraw d = draw_forward_process(clean, 259, 1, 0, 0);
  OptimizerConfig oc;
  Optimizer opt(m, oc);
  m.zero_grad();
  Variable l0 = masked_diffusion_loss(m, d);
  l0.backward();
  opt.step(3e-3);
  NoGradGuard g;
  const double l1 = masked_diffusion_loss(m, d).item();
  EXPECT_LT(l1, l0.item() - 0.01) << "before " << l0.item() << ", after " << l1;
}

// ---- the mask draw ----

TEST(DiffusionDraw, ReproducibleFromSeedStepMicroAndIndependentPerRow) {
  const int64_t B = 4, T = 64;
  std::vector<int32_t> same(static_cast<size_t>(B * T), 65);  // four identical rows
  Tensor clean = ids_of(same, B, T);
  auto masks = [](const DiffusionDraw& d) { return d.targets.to_floats(); };
  const DiffusionDraw a = draw_forward_process(clean, 259, 42, 7, 0), b = draw_forward_process(clean, 259, 42, 7, 0);
  EXPECT_EQ(masks(a), masks(b));
  EXPECT_EQ(a.p, b.p);
  for (auto [seed, step, micro] : {std::tuple{43, 7, 0}, {42, 8, 0}, {42, 7, 1}})
    EXPECT_NE(draw_forward_process(clean, 259, seed, step, micro).p, a.p) << seed << " " << step << " " << micro;
  // Identical rows get their own p and masks; a row's draw does not depend on the batch around it.
  for (int64_t r = 1; r < B; ++r) EXPECT_NE(a.p[r], a.p[0]);
  const DiffusionDraw first_two = draw_forward_process(ids_of({same.begin(), same.begin() + 2 * T}, 2, T), 259, 42, 7, 0);
  const std::vector<float> ma = masks(a), m2 = masks(first_two);
  EXPECT_EQ(std::vector<float>(ma.begin(), ma.begin() + 2 * T), m2);
  EXPECT_EQ(first_two.p[1], a.p[1]);
  for (double p : a.p) EXPECT_TRUE(p >= kDiffusionEps && p < 1);
}

// Over 256 rows of 2048 tokens: each row's masked fraction lies within 5 binomial standard
// deviations of its p, and the p are spread over [eps, 1) (mean 0.5 within 5 standard errors).
TEST(DiffusionDraw, MaskedFractionFollowsP) {
  const int64_t B = 256, T = 2048;
  Tensor clean = ids_of(std::vector<int32_t>(static_cast<size_t>(B * T), 1), B, T);
  const DiffusionDraw d = draw_forward_process(clean, 259, 3, 0, 0);
  const int32_t* tg = d.targets.data<int32_t>();
  double mean_p = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t n = 0;
    for (int64_t t = 0; t < T; ++t) n += tg[b * T + t] >= 0;
    const double p = d.p[b], frac = static_cast<double>(n) / T, sd = std::sqrt(p * (1 - p) / T);
    EXPECT_NEAR(frac, p, 5 * sd + 1e-9) << "row " << b;
    mean_p += p / B;
  }
  EXPECT_NEAR(mean_p, 0.5 * (1 + kDiffusionEps), 5 * std::sqrt(1.0 / 12 / B));
}

TEST(DiffusionDraw, RefusesDataHoldingTheMaskId) {
  Tensor clean = ids_of({1, 2, 259, 4}, 1, 4);
  try {
    draw_forward_process(clean, 259, 1, 0, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mask_id"), std::string::npos) << e.what();
  }
}

// ---- the bound: training loss and evaluation estimator against exact enumeration ----

// For one sequence of L = 4 tokens, the negative ELBO is sum over the 15 non-empty mask sets S of
// w(|S|) * A(S), A(S) = sum_{i in S} CE_i(x with S masked), with w(k) = 1 / (k C(L, k)) for both
// estimators (LLaDA Eq. 6; integrating t^k (1-t)^(L-k) / t over t). With t ~ U[eps, 1) the training
// loss weights sets by (1/(1-eps)) int_eps^1 t^(k-1) (1-t)^(L-k) dt instead (computed here by
// Simpson's rule, exact to 1e-12 for these polynomials).
struct Enumerated {
  std::map<unsigned, double> A;  // mask set bitmask -> A(S)
  std::map<unsigned, std::vector<double>> ce;
  double bound = 0, bound_eps = 0;
  double sd_eval = 0;  // standard deviation of one unstratified Eq. 6 draw (L / l) A(S)
};

Enumerated enumerate_bound(models::LanguageModel& m, const std::vector<int32_t>& x) {
  const int64_t L = static_cast<int64_t>(x.size());
  Enumerated e;
  auto choose = [](int64_t n, int64_t k) {
    double c = 1;
    for (int64_t i = 1; i <= k; ++i) c = c * static_cast<double>(n - k + i) / static_cast<double>(i);
    return c;
  };
  auto w_eps = [&](int64_t k) {  // (1/(1-eps)) int_eps^1 t^(k-1) (1-t)^(L-k) dt
    const int n = 20000;
    const double a = kDiffusionEps, h = (1 - a) / n;
    double s = 0;
    for (int i = 0; i <= n; ++i) {
      const double t = a + i * h, f = std::pow(t, static_cast<double>(k - 1)) * std::pow(1 - t, static_cast<double>(L - k));
      s += f * (i == 0 || i == n ? 1 : i % 2 ? 4 : 2);
    }
    return s * h / 3 / (1 - a);
  };
  double m1 = 0, m2 = 0;
  for (unsigned S = 1; S < (1u << L); ++S) {
    std::vector<int32_t> noisy = x;
    int64_t k = 0;
    for (int64_t i = 0; i < L; ++i)
      if (S >> i & 1) noisy[i] = 259, ++k;
    e.ce[S] = ce_all(m, ids_of(noisy, 1, L), ids_of(x, 1, L));
    double a = 0;
    for (int64_t i = 0; i < L; ++i)
      if (S >> i & 1) a += e.ce[S][i];
    e.A[S] = a;
    const double w = 1.0 / (static_cast<double>(k) * choose(L, k));
    e.bound += w * a;
    e.bound_eps += w_eps(k) * a;
    const double prob = 1.0 / (static_cast<double>(L) * choose(L, k)), val = static_cast<double>(L) / k * a;
    m1 += prob * val, m2 += prob * val * val;
  }
  e.sd_eval = std::sqrt(std::max(0.0, m2 - m1 * m1));
  EXPECT_NEAR(m1, e.bound, 1e-9 * e.bound);  // Eq. 6's draw is unbiased for the bound
  return e;
}

TEST(DiffusionBound, TrainingLossAndEvalEstimatorAverageToTheEnumeratedBound) {
  models::LanguageModel m(tiny_diffusion(0.3));
  const std::vector<int32_t> x = {72, 105, 33, 10};
  const int64_t L = 4;
  const Enumerated e = enumerate_bound(m, x);
  std::printf("enumerated bound %.6f nats (%.6f with t ~ U[eps, 1)), eval draw sd %.4f\n", e.bound, e.bound_eps,
              e.sd_eval);

  // Training loss: 2048 identical rows, each with its own draw; loss * L = mean row estimate.
  const int64_t B = 2048;
  std::vector<int32_t> rows;
  for (int64_t b = 0; b < B; ++b) rows.insert(rows.end(), x.begin(), x.end());
  Tensor clean = ids_of(rows, B, L);
  const DiffusionDraw d = draw_forward_process(clean, 259, 17, 0, 0);
  NoGradGuard g;
  const double train_est = masked_diffusion_loss(m, d).item() * static_cast<double>(L);
  // The same estimate by hand from the enumerated table (checks the loss row by row), and its spread.
  double ref = 0, ref2 = 0;
  const int32_t* tg = d.targets.data<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    unsigned S = 0;
    for (int64_t i = 0; i < L; ++i)
      if (tg[b * L + i] >= 0) S |= 1u << i;
    const double v = S ? e.A.at(S) / d.p[b] : 0.0;
    ref += v / B, ref2 += v * v / B;
  }
  const double se = std::sqrt((ref2 - ref * ref) / B);
  // f32 sums over 2048 rows against f64: 1e-4 relative.
  EXPECT_NEAR(train_est, ref, 1e-4 * ref) << "the loss over 2048 rows vs the enumerated CE table";
  EXPECT_NEAR(train_est, e.bound_eps, 4 * se) << "training loss mean vs exact bound (se " << se << ")";

  // Evaluation estimator: 1024 stratified draws; the unstratified sd bounds its error.
  int64_t count = 0;
  const double eval_est = diffusion_nll_bound(m, ids_of(x, 1, L), std::vector<uint8_t>(L, 1), 1024, 5, &count);
  EXPECT_EQ(count, L);
  EXPECT_NEAR(eval_est, e.bound, 4 * e.sd_eval / std::sqrt(1024.0)) << "eval estimate vs exact bound";
  std::printf("training estimate %.6f (se %.4f), eval estimate %.6f\n", train_est, se, eval_est);
}

// Context positions (scored false) are never masked and not counted: with only position 2 scored the
// bound is exactly CE_2 with position 2 masked (l = 1 = L every draw).
TEST(DiffusionBound, ContextPositionsAreConditionedOn) {
  models::LanguageModel m(tiny_diffusion(0.3));
  const std::vector<int32_t> x = {72, 105, 33, 10};
  int64_t count = 0;
  const double got = diffusion_nll_bound(m, ids_of(x, 1, 4), {0, 0, 1, 0}, 3, 1, &count);
  EXPECT_EQ(count, 1);
  const std::vector<double> ce = ce_all(m, ids_of({72, 105, 259, 10}, 1, 4), ids_of(x, 1, 4));
  EXPECT_NEAR(got, ce[2], 1e-5 * ce[2]);
}

// ---- evaluate() and training ----

using testing::text_tokens;

TrainConfig tiny_train(int64_t steps) {
  TrainConfig c;
  c.steps = steps, c.batch = 4, c.seq_len = 32, c.eval_every = 0, c.eval_batches = 4, c.log_every = 1000;
  c.schedule.lr = 3e-3, c.schedule.warmup_steps = 5;
  return c;
}

// At initialisation every masked token costs about ln 260 = 5.56 nats, so the bound is near it;
// it scores the AR targets (the same count), and is the same figure every time.
TEST(DiffusionEval, ReportsTheBoundOverTheArTargetsReproducibly) {
  models::LanguageModel m(tiny_diffusion());
  TokenDataset data(text_tokens("a masked diffusion model reads both ways. ", 60), 0.1, 260);
  const EvalResult a = evaluate(m, data, 4, 32, 0, 1.0, 2), b = evaluate(m, data, 4, 32, 0, 1.0, 2);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.tokens, ValidationBatches(data, 4, 32).num_targets());
  EXPECT_NEAR(a.loss, std::log(260.0), 0.3);
  EXPECT_NEAR(a.bits_per_byte, a.loss / std::log(2.0), 1e-12);
}

TEST(DiffusionTrain, LossFallsAndResumeIsBitExact) {
  TokenDataset data(text_tokens("speed always wins, but quality must follow. ", 60), 0.05, 260);
  TrainerOptions o;
  o.progress = false;
  TrainConfig c = tiny_train(40);
  c.eval_mc = 2;
  models::LanguageModel straight(tiny_diffusion());
  const double before = evaluate(straight, data, 4, 32, 4, 1.0, 2).loss;
  TrainResult full = Trainer(straight, data, c, o).run();
  const double after = full.evals.back().second.loss;
  std::printf("bound before %.4f, after 40 steps %.4f nats/token; train loss %.4f -> %.4f\n", before, after,
              full.losses.front().second, full.losses.back().second);
  EXPECT_LT(after, before - 1.0);

  const std::string dir = std::filesystem::temp_directory_path().string() + "/sw_diffusion_test_" +
                          std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  o.checkpoint_path = dir + "/ckpt.safetensors";
  models::LanguageModel first(tiny_diffusion());
  request_interrupt_after_for_test(20);
  TrainResult a = Trainer(first, data, c, o).run();
  ASSERT_TRUE(a.interrupted);
  models::LanguageModel second(tiny_diffusion());
  Trainer t2(second, data, c, o);
  t2.resume(read_checkpoint(o.checkpoint_path));
  TrainResult b = t2.run();
  std::vector<double> joined;
  for (auto& [s, l] : a.losses) joined.push_back(l);
  for (auto& [s, l] : b.losses) joined.push_back(l);
  ASSERT_EQ(joined.size(), full.losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], full.losses[i].second) << "step " << i + 1;
  EXPECT_EQ(b.evals.back().second.loss, after);
  std::filesystem::remove_all(dir);
}

TEST(DiffusionTrain, RefusesDataHoldingTheMaskId) {
  models::LanguageModel m(tiny_diffusion());
  std::vector<int32_t> toks = text_tokens("plain bytes only here. ", 40);
  toks[17] = 259;
  TokenDataset data(toks, 0.1, 260);
  TrainerOptions o;
  o.progress = false;
  EXPECT_THROW(Trainer(m, data, tiny_train(2), o), Error);
}

// ---- config errors name the field ----

void expect_error_naming(const std::function<void()>& f, const std::string& field) {
  try {
    f();
    ADD_FAILURE() << "expected an error naming " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(DiffusionConfig, ErrorsNameTheField) {
  using nlohmann::json;
  json j = json::parse(R"({"d_model": 32, "n_layers": 1, "mixer": {"type": "attention", "n_heads": 2}})");
  j["objective"] = "diffusion";
  expect_error_naming([&] { models::parse_model_config(j, "my.json"); }, "my.json.objective");
  j["objective"] = "masked_diffusion";
  j["mask_id"] = 260;
  expect_error_naming([&] { models::parse_model_config(j, "my.json"); }, "my.json.mask_id");
  j["mask_id"] = -2;
  expect_error_naming([&] { models::parse_model_config(j, "my.json"); }, "mask_id");
  j.erase("mask_id");
  // A causal mixer (attention's default) in a masked-diffusion model: refused when built.
  const models::ModelConfig causal = models::parse_model_config(j, "my.json");
  expect_error_naming([&] { models::LanguageModel{causal, "my.json"}; }, "my.json.objective");
  j["mixer"]["causal"] = false;
  const models::ModelConfig ok = models::parse_model_config(j, "my.json");
  EXPECT_NO_THROW(models::LanguageModel{ok});
  EXPECT_EQ(ok.resolved_mask_id(), 259);
  // A hybrid with one causal recurrent layer is refused too, naming the layer.
  models::ModelConfig hybrid = tiny_diffusion();
  hybrid.mixers = json::parse(R"({"A": {"type": "attention", "n_heads": 4, "causal": false}, "L": {"type": "gla", "n_heads": 2}})");
  hybrid.layers = "AL";
  hybrid.mixer = json();
  expect_error_naming([&] { models::LanguageModel{hybrid, "h.json"}; }, "layer 1");
  // The objective round-trips through the saved config.
  const models::ModelConfig back = models::parse_model_config(models::model_config_to_json(ok), "saved");
  EXPECT_TRUE(back.masked_diffusion());
  EXPECT_EQ(back.mask_id, -1);
}

}  // namespace
}  // namespace sw::train
