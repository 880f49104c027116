// Lightning attention (MiniMax-01) as an architecture: the op (ops/lightning_ops.h) against the f64
// reference recurrence, forward and gradients; the layer (nn/linear_attention/lightning.h) against
// an f64 composition of its own parameters; its decay slopes against MiniMax's formula; state carry
// across prefill / decode / prefill; the small preset's size. Prefill == decode of the tiny preset
// is covered by prefill_decode_test.cpp (every tiny preset).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>

#include "autograd/gradcheck.h"
#include "kernels/ref/gated_linear_attention_ref.h"
#include "models/language_model.h"
#include "models/presets.h"
#include "models/registry.h"
#include "nn/linear_attention/lightning.h"
#include "ops/lightning_ops.h"
#include "ops/ops.h"
#include "testing.h"

namespace sw {
namespace {

using kernels::GlaGate;
using sw::testing::random_floats;

Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  return Tensor::from_vector(random_floats(static_cast<size_t>(shape_numel(s)), seed, lo, hi), s);
}

// max |a - b| / max |b|: the error relative to the scale of the reference.
double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double e = std::fabs(static_cast<double>(a[i]) - b[i]);
    num = std::isfinite(e) ? std::max(num, e) : INFINITY;
    den = std::max(den, std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}

Variable flat2(const Variable& a, const Variable& b) {
  return ops::concat({ops::reshape(a, {a.numel()}), ops::reshape(b, {b.numel()})}, 0);
}

// ---- op ----------------------------------------------------------------------------------------

// Gradients of o and the final state w.r.t. q, k, v, g and h0 by central differences of the f64
// reference (autograd/gradcheck.h; its default tolerances are the fp32-backward budget). Block size
// 3 over T = 11: several full blocks and a partial one, so every block-boundary term is exercised.
TEST(LightningOp, GradientsMatchF64Reference) {
  const int64_t B = 2, T = 11, H = 3, K = 4, V = 5;
  const double scale = 0.7;
  std::vector<Tensor> in = {rand_t({B, T, H, K}, 1), rand_t({B, T, H, K}, 2), rand_t({B, T, H, V}, 3),
                            rand_t({H}, 4, -0.8f, -0.05f), rand_t({B, H, K, V}, 5)};
  auto op = [&](const std::vector<Variable>& v) {
    ops::LightningOutput r = ops::lightning_attention(v[0], v[1], v[2], v[3], &v[4], scale, 3);
    return flat2(r.o, r.state);
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) {
    std::vector<double> out(B * T * H * V + B * H * K * V);
    kernels::ref::gla_forward_ref({B, T, H, K, V}, GlaGate::kHeadConst, scale, x[0].data(), x[1].data(), x[2].data(),
                                  x[3].data(), nullptr, x[4].data(), out.data(), out.data() + B * T * H * V);
    return out;
  };
  GradCheckResult res = grad_check(op, ref, in);
  EXPECT_TRUE(res.ok) << res.report;
}

// Without h0 and with the decay fixed (the layer's case); default block size over T < block.
TEST(LightningOp, GradientsWithoutH0AndWithAFixedDecay) {
  const int64_t B = 1, T = 9, H = 2, K = 3, V = 2;
  std::vector<Tensor> in = {rand_t({B, T, H, K}, 11), rand_t({B, T, H, K}, 12), rand_t({B, T, H, V}, 13),
                            rand_t({H}, 14, -0.6f, -0.05f)};
  auto op = [&](const std::vector<Variable>& v) {
    ops::LightningOutput r = ops::lightning_attention(v[0], v[1], v[2], v[3], nullptr, 1.0);
    return flat2(r.o, r.state);
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) {
    std::vector<double> out(B * T * H * V + B * H * K * V);
    kernels::ref::gla_forward_ref({B, T, H, K, V}, GlaGate::kHeadConst, 1.0, x[0].data(), x[1].data(), x[2].data(),
                                  x[3].data(), nullptr, nullptr, out.data(), out.data() + B * T * H * V);
    return out;
  };
  GradCheckOptions o;
  o.wrt = {true, true, true, false};
  GradCheckResult res = grad_check(op, ref, in, o);
  EXPECT_TRUE(res.ok) << res.report;
}

// The inference path (no gradient: nothing saved) and the decode step against the reference.
// fp32 sums of <= K * T = 80 products: ~6e-8 * sqrt(80) ~ 5e-7 relative; 5e-6 leaves 10x.
TEST(LightningOp, InferencePathAndStepMatchReference) {
  const int64_t B = 2, T = 10, H = 3, K = 4, V = 6;
  Tensor q = rand_t({B, T, H, K}, 21), k = rand_t({B, T, H, K}, 22), v = rand_t({B, T, H, V}, 23),
         g = rand_t({H}, 24, -1.0f, -0.01f), h0 = rand_t({B, H, K, V}, 25);
  std::vector<double> o(B * T * H * V), ht(B * H * K * V);
  const std::vector<double> qd = q.to_doubles(), kd = k.to_doubles(), vd = v.to_doubles(), gd = g.to_doubles(),
                            hd = h0.to_doubles();
  kernels::ref::gla_forward_ref({B, T, H, K, V}, GlaGate::kHeadConst, 1.0, qd.data(), kd.data(), vd.data(), gd.data(),
                                nullptr, hd.data(), o.data(), ht.data());
  NoGradGuard ng;
  Variable vh0(h0);
  ops::LightningOutput r = ops::lightning_attention(Variable(q), Variable(k), Variable(v), Variable(g), &vh0, 1.0, 4);
  EXPECT_LE(rel_err(r.o.data().to_floats(), o), 5e-6);
  EXPECT_LE(rel_err(r.state.data().to_floats(), ht), 5e-6);
  // Token by token with the step op from h0.
  Tensor state = h0.clone();
  std::vector<float> o_steps(B * T * H * V);
  for (int64_t t = 0; t < T; ++t) {
    Tensor ot = ops::lightning_attention_step(q.slice(1, t, t + 1).contiguous(), k.slice(1, t, t + 1).contiguous(),
                                              v.slice(1, t, t + 1).contiguous(), g, state, 1.0);
    const std::vector<float> of = ot.to_floats();
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(of.begin() + b * H * V, H * V, o_steps.begin() + (b * T + t) * H * V);
  }
  EXPECT_LE(rel_err(o_steps, o), 5e-6);
  EXPECT_LE(rel_err(state.to_floats(), ht), 5e-6);
}

TEST(LightningOp, RejectsBadArguments) {
  const Tensor q = rand_t({1, 4, 2, 3}, 1), v = rand_t({1, 4, 2, 5}, 2);
  auto fails = [](auto f) {
    try {
      f();
    } catch (const Error&) {
      return true;
    }
    return false;
  };
  EXPECT_TRUE(fails([&] { ops::lightning_attention(Variable(q), Variable(q), Variable(v), Variable(rand_t({3}, 3)), nullptr, 1.0); }));
  EXPECT_TRUE(fails([&] {
    Tensor g = Tensor::from_vector(std::vector<float>{-0.1f, NAN}, {2});
    ops::lightning_attention(Variable(q), Variable(q), Variable(v), Variable(g), nullptr, 1.0);
  }));
  EXPECT_TRUE(fails([&] {
    ops::lightning_attention(Variable(q), Variable(q), Variable(v), Variable(rand_t({2}, 3)), nullptr, 1.0, 0);
  }));
  Variable bad_h0(rand_t({1, 2, 3, 4}, 4));
  EXPECT_TRUE(fails([&] {
    ops::lightning_attention(Variable(q), Variable(q), Variable(v), Variable(rand_t({2}, 3)), &bad_h0, 1.0);
  }));
}

// ---- layer -------------------------------------------------------------------------------------

constexpr int64_t kD = 32;

std::unique_ptr<nn::Mixer> make_layer(const std::string& json, int64_t layer_index, int64_t n_layers,
                                      uint64_t seed = 11) {
  models::ModelConfig m;
  m.d_model = kD;
  m.n_layers = n_layers;
  nlohmann::json j = nlohmann::json::parse(json);
  std::mt19937_64 rng(seed);
  return models::find_mixer("lightning", "lightning_test").make(j, m, nn::MixerSite{layer_index, n_layers}, rng,
                                                                "lightning_test");
}

// MiniMax get_slope_rate, written out independently of the layer.
double minimax_slope(int64_t h, int64_t H, int64_t l, int64_t L) {
  return std::pow(2.0, -8.0 * static_cast<double>(h + 1) / static_cast<double>(H)) *
         (1.0 - static_cast<double>(l) / (static_cast<double>(L) - 1.0 + 1e-5) + 1e-5);
}

TEST(LightningLayer, DecaySlopesFollowMiniMax) {
  for (int64_t L : {1, 2, 5, 12}) {
    for (int64_t l : {int64_t{0}, L / 2, L - 1}) {
      for (int64_t H : {3, 4, 8}) {
        auto layer = make_layer(R"({"type": "lightning", "n_heads": )" + std::to_string(H) + R"(, "head_dim": 4})", l, L);
        const Tensor& g = static_cast<nn::LightningAttention&>(*layer).log_decay();
        ASSERT_EQ(g.shape(), Shape({H}));
        for (int64_t h = 0; h < H; ++h) {
          const double want = -minimax_slope(h, H, l, L);
          // Stored as fp32: one rounding of the double value.
          EXPECT_NEAR(g.data<float>()[h], want, 6e-8 * std::fabs(want)) << "L=" << L << " l=" << l << " h=" << h;
        }
      }
    }
  }
  // The first layer decays fastest, the last one hardly at all (factor ~2e-5 for L = 2).
  auto first = make_layer(R"({"type": "lightning", "n_heads": 4})", 0, 2);
  auto last = make_layer(R"({"type": "lightning", "n_heads": 4})", 1, 2);
  EXPECT_NEAR(static_cast<nn::LightningAttention&>(*first).log_decay().data<float>()[0], -std::pow(2.0, -2.0) * (1 + 1e-5),
              1e-7);
  EXPECT_LT(-static_cast<nn::LightningAttention&>(*last).log_decay().data<float>()[0], 1e-5);
}

std::map<std::string, Tensor> params_of(nn::Mixer& layer) {
  std::map<std::string, Tensor> m;
  layer.visit_parameters([&](const std::string& name, nn::Parameter& p) { m[name] = p.var.data(); });
  return m;
}

// y [rows, out] = x [rows, in] W^T, W [out, in], in double.
std::vector<double> linear_f64(const std::vector<double>& x, const Tensor& w, int64_t rows) {
  const int64_t out = w.dim(0), in = w.dim(1);
  const std::vector<double> wd = w.to_doubles();
  std::vector<double> y(rows * out, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * wd[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The layer's forward against the same function composed in double from its parameters:
// projections, silu, the f64 reference recurrence with MiniMax's slopes (from the formula, in
// double), RMSNorm over the whole hidden with its weight, the sigmoid gate and the output
// projection. Error budget: fp32 GEMMs of length <= 32 and the recurrence over 37 tokens each add
// ~6e-8 * sqrt(n) ~ 4e-7 relative, silu / sigmoid ~1e-6, chained through six stages: a few 1e-6;
// the tolerance 2e-5 is that with margin.
TEST(LightningLayer, ForwardMatchesF64Composition) {
  const int64_t B = 2, T = 37, H = 4, d = 8, inner = H * d, l = 1, L = 3;
  const double eps = 1e-6;
  // block_size 16: two full blocks and a partial one; head_dim 8 != d_model / n_heads.
  auto layer = make_layer(R"({"type": "lightning", "n_heads": 4, "head_dim": 8, "block_size": 16})", l, L);
  auto P = params_of(*layer);
  ASSERT_EQ(P.size(), 6u);
  // A non-trivial norm weight (it starts at ones).
  {
    Tensor& w = P.at("norm.weight");
    const std::vector<float> r = random_floats(inner, 77, 0.5f, 1.5f);
    std::copy(r.begin(), r.end(), w.data<float>());
  }
  const Tensor x = rand_t({B, T, kD}, 5);
  const std::vector<double> xd = x.to_doubles();
  const int64_t rows = B * T;
  std::vector<double> q = linear_f64(xd, P.at("q_proj.weight"), rows), k = linear_f64(xd, P.at("k_proj.weight"), rows),
                      v = linear_f64(xd, P.at("v_proj.weight"), rows);
  for (auto* t : {&q, &k, &v})
    for (double& e : *t) e = silu(e);
  std::vector<double> g(H);
  for (int64_t h = 0; h < H; ++h) g[h] = -minimax_slope(h, H, l, L);
  std::vector<double> o(rows * inner), ht(B * H * d * d);
  kernels::ref::gla_forward_ref({B, T, H, d, d}, GlaGate::kHeadConst, 1.0, q.data(), k.data(), v.data(), g.data(),
                                nullptr, nullptr, o.data(), ht.data());
  const std::vector<double> nw = P.at("norm.weight").to_doubles();
  std::vector<double> gate = linear_f64(xd, P.at("output_gate.weight"), rows);
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t c = 0; c < inner; ++c) ms += o[r * inner + c] * o[r * inner + c];
    const double inv = 1.0 / std::sqrt(ms / static_cast<double>(inner) + eps);
    for (int64_t c = 0; c < inner; ++c)
      o[r * inner + c] = sigmoid(gate[r * inner + c]) * (o[r * inner + c] * inv * nw[c]);
  }
  const std::vector<double> want = linear_f64(o, P.at("out_proj.weight"), rows);

  // Training path (autograd on: the forward saving block states) and inference path.
  const double e_train = rel_err(layer->forward(Variable(x, true), nn::MixerContext{}).data().to_floats(), want);
  double e_infer;
  {
    NoGradGuard ng;
    e_infer = rel_err(layer->forward(Variable(x), nn::MixerContext{}).data().to_floats(), want);
  }
  std::printf("layer vs f64 composition: train path %.2e, inference path %.2e\n", e_train, e_infer);
  EXPECT_LE(e_train, 2e-5);
  EXPECT_LE(e_infer, 2e-5);
}

TEST(LightningLayer, GradientForEveryParameter) {
  auto layer = make_layer(R"({"type": "lightning", "n_heads": 4, "block_size": 8})", 0, 2);
  Variable x(rand_t({2, 19, kD}, 3), true);
  Variable y = layer->forward(x, nn::MixerContext{});
  ASSERT_EQ(y.shape(), x.shape());
  y.backward(rand_t(y.shape(), 4));
  ASSERT_TRUE(x.grad().defined());
  for (float f : x.grad().to_floats()) ASSERT_TRUE(std::isfinite(f));
  for (nn::Parameter* p : layer->parameters()) {
    ASSERT_TRUE(p->var.grad().defined()) << p->name;
    for (float f : p->var.grad().to_floats()) ASSERT_TRUE(std::isfinite(f)) << p->name;
  }
}

// Prefill 5 tokens, one decode step (the in-place step kernel), then 15 more tokens with the carried
// state == one stateless pass. fp32 vs fp32 over different block boundaries: the same 1e-5 budget
// as the other linear-attention layers (linear_attention_layers_test.cpp).
TEST(LightningLayer, SegmentsWithCarriedStateEqualOnePass) {
  auto layer = make_layer(R"({"type": "lightning", "n_heads": 4, "block_size": 4})", 0, 2);
  const int64_t B = 2, T = 21;
  Tensor x = rand_t({B, T, kD}, 5);
  const std::vector<float> full_f = layer->forward(Variable(x, true), nn::MixerContext{}).data().to_floats();
  const std::vector<double> full(full_f.begin(), full_f.end());
  NoGradGuard ng;
  auto state = layer->new_state(B);
  std::vector<float> seg(full.size());
  const int64_t cuts[] = {0, 5, 6, T};
  for (int s = 0; s < 3; ++s) {
    nn::MixerContext ctx;
    ctx.position = cuts[s];
    ctx.state = state.get();
    const std::vector<float> yf =
        layer->forward(Variable(x.slice(1, cuts[s], cuts[s + 1]).contiguous()), ctx).data().to_floats();
    const int64_t n = cuts[s + 1] - cuts[s];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < n; ++t)
        for (int64_t c = 0; c < kD; ++c) seg[(b * T + cuts[s] + t) * kD + c] = yf[(b * n + t) * kD + c];
  }
  EXPECT_LE(rel_err(seg, full), 1e-5);
  EXPECT_EQ(state->bytes(), B * layer->state_bytes(1));
}

TEST(LightningLayer, RejectsBadConfig) {
  auto fails = [](const std::string& json) {
    try {
      make_layer(json, 0, 2);
    } catch (const Error&) {
      return true;
    }
    return false;
  };
  EXPECT_TRUE(fails(R"({"type": "lightning", "n_heads": 5})"));  // 32 not a multiple of 5
  EXPECT_TRUE(fails(R"({"type": "lightning", "n_heads": 4, "block_size": 0})"));
  EXPECT_TRUE(fails(R"({"type": "lightning", "n_heads": 4, "norm_eps": 0})"));
  EXPECT_TRUE(fails(R"({"type": "lightning", "n_heads": 4, "head_dim": -1})"));
  EXPECT_TRUE(fails(R"({"type": "lightning", "n_heads": 4, "no_such_field": 1})"));
}

// ---- presets -----------------------------------------------------------------------------------

TEST(LightningPresets, SmallIsWithinFivePercentOfTransformerSmall) {
  const int64_t want = models::LanguageModel(models::resolve_preset("transformer-small")).num_parameters();
  const int64_t n = models::LanguageModel(models::resolve_preset("lightning-small")).num_parameters();
  std::printf("lightning-small %lld parameters (transformer-small %lld, %+.2f%%)\n", static_cast<long long>(n),
              static_cast<long long>(want), 100.0 * (static_cast<double>(n) / static_cast<double>(want) - 1.0));
  EXPECT_NEAR(static_cast<double>(n), static_cast<double>(want), 0.05 * static_cast<double>(want));
  EXPECT_NO_THROW(models::LanguageModel(models::resolve_preset("lightning-tiny")));
}

}  // namespace
}  // namespace sw
