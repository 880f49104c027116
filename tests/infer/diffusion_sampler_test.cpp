// The LLaDA sampler on crafted logits functions (no model): the transfer schedule is
// get_num_transfer_tokens, low-confidence remasking commits exactly the most confident masked
// positions of the block (checked against a plain selection loop), greedy decoding is reproducible
// and with steps == length commits one token per step, semi-AR never writes outside its block,
// random remasking and Gumbel sampling are seeded, Fast-dLLM's threshold commits every confident
// position (and with threshold 1 reduces to one per step), CFG combines the two logits as LLaDA;
// then the sampler on a real masked-diffusion model.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "core/error.h"
#include "infer/diffusion_sampler.h"
#include "models/presets.h"

namespace sw::infer {
namespace {

constexpr int32_t kMask = 9;
constexpr int64_t kVocab = 10;

// Logits that depend on the whole canvas (as a bidirectional model's do): seeded by a hash of it.
DiffusionLogitsFn hashed_logits(double scale = 3.0) {
  return [scale](const std::vector<int32_t>& canvas) {
    uint64_t h = 1469598103934665603ull;
    for (int32_t id : canvas) h = (h ^ static_cast<uint64_t>(id)) * 1099511628211ull;
    std::mt19937_64 rng(h);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> lg(canvas.size() * kVocab);
    for (float& v : lg) v = static_cast<float>(scale) * u(rng);
    return lg;
  };
}

DiffusionSamplerConfig config(int64_t gen, int64_t steps, int64_t block) {
  DiffusionSamplerConfig c;
  c.gen_length = gen, c.steps = steps, c.block_length = block, c.temperature = 0;
  return c;
}

TEST(DiffusionSampler, NumTransferTokensIsLladasSchedule) {
  EXPECT_EQ(num_transfer_tokens(10, 4), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(num_transfer_tokens(4, 4), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(num_transfer_tokens(3, 5), (std::vector<int64_t>{1, 1, 1, 0, 0}));
  EXPECT_EQ(num_transfer_tokens(32, 1), (std::vector<int64_t>{32}));
}

// Every step, recomputed by straightforward code from the logits the sampler saw: softmax in f64 and
// argmax over the ids other than the mask, then k times "the most confident remaining masked position of the block, leftmost on
// ties". The committed positions and tokens must be exactly those.
TEST(DiffusionSampler, LowConfidenceCommitsExactlyTheMostConfidentPositions) {
  const std::vector<int32_t> prompt = {1, 2, 3};
  const DiffusionSamplerConfig c = config(12, 6, 6);  // two blocks of 6, 3 steps each: 2 tokens per step
  std::vector<std::vector<int32_t>> seen_canvas;
  std::vector<std::vector<float>> seen_logits;
  DiffusionLogitsFn inner = hashed_logits();
  DiffusionLogitsFn fn = [&](const std::vector<int32_t>& canvas) {
    seen_canvas.push_back(canvas);
    seen_logits.push_back(inner(canvas));
    return seen_logits.back();
  };
  int64_t checked = 0;
  diffusion_generate(fn, prompt, kMask, kVocab, c, [&](const DiffusionStep& st) {
    const std::vector<int32_t>& before = seen_canvas.back();
    const std::vector<float>& lg = seen_logits.back();
    std::vector<double> conf(before.size(), -1);
    std::vector<int32_t> arg(before.size(), -1);
    for (int64_t p = st.block_start; p < st.block_end; ++p) {
      if (before[p] != kMask) continue;
      double mx = -1e300, z = 0;
      for (int64_t v = 0; v < kVocab; ++v)  // the mask id is never a candidate
        if (v != kMask && lg[p * kVocab + v] > mx) mx = lg[p * kVocab + v], arg[p] = static_cast<int32_t>(v);
      for (int64_t v = 0; v < kVocab; ++v)
        if (v != kMask) z += std::exp(lg[p * kVocab + v] - mx);
      conf[p] = 1 / z;
    }
    const int64_t k = num_transfer_tokens(c.block_length, c.steps / 2)[(st.step - 1) % 3];
    std::vector<int64_t> want;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t p = st.block_start; p < st.block_end; ++p)
        if (conf[p] >= 0 && (best < 0 || conf[p] > conf[best])) best = p;
      want.push_back(best);
      conf[best] = -1;
    }
    EXPECT_EQ(st.committed, want) << "step " << st.step;
    for (int64_t p : want) EXPECT_EQ((*st.canvas)[p], arg[p]) << "token at " << p;
    ++checked;
  });
  EXPECT_EQ(checked, 6);
}

TEST(DiffusionSampler, GreedyIsReproducibleAndStepsEqualLengthCommitOnePerStep) {
  const std::vector<int32_t> prompt = {4, 5};
  const DiffusionSamplerConfig c = config(16, 16, 16);
  const DiffusionResult a = diffusion_generate(hashed_logits(), prompt, kMask, kVocab, c);
  const DiffusionResult b = diffusion_generate(hashed_logits(), prompt, kMask, kVocab, c);
  EXPECT_EQ(a.canvas, b.canvas);
  EXPECT_EQ(a.steps, 16);
  EXPECT_EQ(a.committed_per_step, std::vector<int64_t>(16, 1));
  ASSERT_EQ(a.generated.size(), 16u);
  for (int32_t id : a.generated) EXPECT_NE(id, kMask);
  EXPECT_EQ(std::vector<int32_t>(a.canvas.begin(), a.canvas.begin() + 2), prompt);
  // The seed plays no part at temperature 0 with low-confidence remasking.
  DiffusionSamplerConfig other = c;
  other.seed = 99;
  EXPECT_EQ(diffusion_generate(hashed_logits(), prompt, kMask, kVocab, other).canvas, a.canvas);
}

// Semi-AR: each step writes only masked positions of its block; what lies right of the block stays
// masked, what lies left of it stays as it was, even when the logits there are far more confident.
TEST(DiffusionSampler, SemiAutoregressiveNeverWritesOutsideItsBlock) {
  const std::vector<int32_t> prompt = {1};
  const DiffusionSamplerConfig c = config(24, 9, 8);  // 3 blocks, 3 steps each
  DiffusionLogitsFn inner = hashed_logits(1.0);
  DiffusionLogitsFn fn = [&](const std::vector<int32_t>& canvas) {
    std::vector<float> lg = inner(canvas);
    for (size_t p = 17; p < canvas.size(); ++p) lg[p * kVocab + 3] = 50.f;  // the last block: near-certain
    return lg;
  };
  std::vector<int32_t> prev(prompt);
  prev.resize(25, kMask);
  std::vector<int64_t> counts;
  diffusion_generate(fn, prompt, kMask, kVocab, c, [&](const DiffusionStep& st) {
    EXPECT_EQ(st.block_start, 1 + 8 * st.block);
    EXPECT_EQ(st.block_end, st.block_start + 8);
    std::set<int64_t> committed(st.committed.begin(), st.committed.end());
    for (int64_t p = 0; p < 25; ++p) {
      if (committed.count(p)) {
        EXPECT_TRUE(p >= st.block_start && p < st.block_end) << "step " << st.step << " wrote " << p;
        EXPECT_EQ(prev[p], kMask) << "step " << st.step << " rewrote committed " << p;
      } else {
        EXPECT_EQ((*st.canvas)[p], prev[p]) << "step " << st.step << " changed " << p;
      }
      if (p >= st.block_end) {
        EXPECT_EQ((*st.canvas)[p], kMask);
      }
    }
    prev = *st.canvas;
    counts.push_back(static_cast<int64_t>(st.committed.size()));
  });
  // 8 masked tokens over 3 steps per block: 3, 3, 2 (get_num_transfer_tokens), in every block.
  EXPECT_EQ(counts, (std::vector<int64_t>{3, 3, 2, 3, 3, 2, 3, 3, 2}));
  for (int64_t p = 17; p < 25; ++p) EXPECT_EQ(prev[p], 3);
}

TEST(DiffusionSampler, RandomRemaskingAndGumbelSamplingAreSeeded) {
  const std::vector<int32_t> prompt = {1, 2};
  for (const char* remask : {"low_confidence", "random"}) {
    DiffusionSamplerConfig c = config(16, 8, 8);
    c.remasking = remask, c.temperature = 1.0, c.seed = 5;
    const DiffusionResult a = diffusion_generate(hashed_logits(), prompt, kMask, kVocab, c);
    const DiffusionResult b = diffusion_generate(hashed_logits(), prompt, kMask, kVocab, c);
    EXPECT_EQ(a.canvas, b.canvas) << remask;
    EXPECT_EQ(a.committed_per_step, std::vector<int64_t>(8, 2)) << remask;
    c.seed = 6;
    EXPECT_NE(diffusion_generate(hashed_logits(), prompt, kMask, kVocab, c).canvas, a.canvas) << remask;
  }
  // Gumbel-max at temperature T samples softmax(logits / T): two tokens with logits ln 3 and 0 (the
  // rest -inf-like) come out 3 : 1 over 4000 single-token generations (5 sd: +-0.034).
  DiffusionLogitsFn two = [](const std::vector<int32_t>& canvas) {
    std::vector<float> lg(canvas.size() * kVocab, -100.f);
    for (size_t p = 0; p < canvas.size(); ++p) lg[p * kVocab + 0] = std::log(3.f), lg[p * kVocab + 1] = 0.f;
    return lg;
  };
  int zeros = 0;
  for (int s = 0; s < 4000; ++s) {
    DiffusionSamplerConfig c = config(1, 1, 1);
    c.temperature = 1.0, c.seed = static_cast<uint64_t>(s);
    zeros += diffusion_generate(two, {}, kMask, kVocab, c).generated[0] == 0;
  }
  EXPECT_NEAR(zeros / 4000.0, 0.75, 0.034);
}

// Fast-dLLM: each step commits every masked position of the block at or above the threshold, and
// at least the most confident one.
TEST(DiffusionSampler, ThresholdCommitsEveryConfidentPosition) {
  // Positions 0..7 of the generation: confidence high (logit 20 on token p % 5) at even positions
  // while masked, flat (all logits 0, confidence 0.1) at odd ones.
  DiffusionLogitsFn fn = [](const std::vector<int32_t>& canvas) {
    std::vector<float> lg(canvas.size() * kVocab, 0.f);
    for (size_t p = 0; p < canvas.size(); ++p)
      if (p % 2 == 0) lg[p * kVocab + p % 5] = 20.f;
    return lg;
  };
  DiffusionSamplerConfig c = config(8, 8, 8);
  c.threshold = 0.9;
  std::vector<std::vector<int64_t>> steps;
  const DiffusionResult r =
      diffusion_generate(fn, {}, kMask, kVocab, c, [&](const DiffusionStep& st) { steps.push_back(st.committed); });
  ASSERT_GE(steps.size(), 2u);
  EXPECT_EQ(std::set<int64_t>(steps[0].begin(), steps[0].end()), (std::set<int64_t>{0, 2, 4, 6}));
  // Then the flat positions: one per step (the leftmost on the tie), 4 more steps.
  EXPECT_EQ(r.steps, 5);
  EXPECT_EQ(r.committed_per_step, (std::vector<int64_t>{4, 1, 1, 1, 1}));
  for (int64_t p = 0; p < 8; p += 2) EXPECT_EQ(r.generated[p], p % 5);
  // Threshold 1 (nothing but certainty passes) is one token per step: LLaDA with steps == length.
  DiffusionSamplerConfig one = config(12, 0, 4);
  one.threshold = 1.0;
  const DiffusionResult a = diffusion_generate(hashed_logits(), {7}, kMask, kVocab, one);
  const DiffusionResult b = diffusion_generate(hashed_logits(), {7}, kMask, kVocab, config(12, 12, 4));
  EXPECT_EQ(a.canvas, b.canvas);
  EXPECT_EQ(a.committed_per_step, std::vector<int64_t>(12, 1));
}

// CFG: logits = u + (s + 1) (c - u), u from the canvas with its prompt masked.
TEST(DiffusionSampler, ClassifierFreeGuidanceCombinesConditionalAndUnconditional) {
  // Conditional (prompt visible): token 1 slightly ahead of token 2; unconditional: token 1 far
  // ahead. With s = 2: 1: 0.5 + 3 * (1.0 - 0.5) = 2.0; 2: 0 + 3 * (0.9 - 0) = 2.7 -> token 2 wins,
  // while without guidance token 1 wins.
  DiffusionLogitsFn fn = [](const std::vector<int32_t>& canvas) {
    const bool cond = canvas[0] != kMask;
    std::vector<float> lg(canvas.size() * kVocab, -5.f);
    for (size_t p = 0; p < canvas.size(); ++p) lg[p * kVocab + 1] = cond ? 1.0f : 0.5f, lg[p * kVocab + 2] = cond ? 0.9f : 0.f;
    return lg;
  };
  DiffusionSamplerConfig c = config(1, 1, 1);
  EXPECT_EQ(diffusion_generate(fn, {4}, kMask, kVocab, c).generated[0], 1);
  c.cfg_scale = 2.0;
  const DiffusionResult r = diffusion_generate(fn, {4}, kMask, kVocab, c);
  EXPECT_EQ(r.generated[0], 2);
  EXPECT_EQ(r.steps, 1);
}

TEST(DiffusionSampler, BadSettingsAreRefusedNamingThem) {
  auto refused = [](DiffusionSamplerConfig c, const std::string& field) {
    try {
      diffusion_generate(hashed_logits(), {1}, kMask, kVocab, c);
      ADD_FAILURE() << "expected an error naming " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  refused(config(12, 12, 5), "block_length");
  refused(config(12, 13, 4), "steps");
  refused(config(12, 6, 3), "steps");  // 4 blocks: steps must be a multiple of 4
  DiffusionSamplerConfig c = config(8, 8, 8);
  c.remasking = "entropy";
  refused(c, "remasking");
  c = config(8, 8, 8);
  c.threshold = 1.5;
  refused(c, "threshold");
  try {
    diffusion_generate(hashed_logits(), {kMask}, kMask, kVocab, config(8, 8, 8));
    ADD_FAILURE() << "a prompt holding the mask id must be refused";
  } catch (const Error&) {
  }
}

TEST(DiffusionSampler, RenderCanvasShowsMasksAsPlaceholders) {
  auto decode = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += static_cast<char>('a' + id);
    return s;
  };
  EXPECT_EQ(render_canvas({0, kMask, 1, 2, kMask}, kMask, decode), "a_bc_");
}

// On a (random) masked-diffusion model: the model's logits function returns [L, V] of one forward,
// and generation fills the whole canvas with non-mask ids.
TEST(DiffusionSampler, RunsOnAMaskedDiffusionModel) {
  models::ModelConfig cfg = models::resolve_preset("mdlm-tiny");
  models::LanguageModel m(cfg);
  const int32_t mask = cfg.resolved_mask_id();
  DiffusionLogitsFn fn = model_logits_fn(m);
  const std::vector<float> lg = fn({72, 105, mask, mask});
  EXPECT_EQ(lg.size(), 4u * 260);
  DiffusionSamplerConfig c = config(16, 8, 8);
  const DiffusionResult r = diffusion_generate(fn, {72, 105}, mask, cfg.vocab_size, c);
  ASSERT_EQ(r.generated.size(), 16u);
  for (int32_t id : r.generated) EXPECT_TRUE(id >= 0 && id < 260 && id != mask);
  EXPECT_EQ(r.steps, 8);
}

}  // namespace
}  // namespace sw::infer
