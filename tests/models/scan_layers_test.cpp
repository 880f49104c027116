// Scan-family layers: Mamba (selective scan), HGRN (element-wise recurrence), TTT-Linear.
//
// 1. Ops (ops/scan_ops.h): gradients of every input, through both outputs (the sequence output and
//    the final state), against central differences of the f64 references (kernels/ref/scan_ref.h),
//    with grad_check's defaults (atol 1e-4, rtol 1e-3: fp32 backward vs f64, reductions of tens of
//    terms of size ~1 round at ~1e-6, so the bound has a wide margin and still catches any wrong
//    term). Both scan forms (sequential, Blelloch) for the two diagonal scans.
// 2. Layers: forward and backward give finite values and a gradient for every parameter; a sequence
//    fed in segments (prefills, T = 1 decode steps, prefills across TTT mini-batch boundaries) with
//    the state carried equals one stateless pass; state bytes stay flat in the context; stateful
//    Mamba/HGRN forwards are differentiable, TTT's off-boundary ones refuse a tape; layers run with
//    bf16 weights; Mamba's dt/A init and TTT's RoPE pairing follow the references.
// 3. Presets: the small presets are within 5% of transformer-small's parameter count.
// Prefill == decode on the tiny presets is checked by prefill_decode_test.
#include <cmath>
#include <cstdio>
#include <random>

#include "autograd/gradcheck.h"
#include "kernels/ref/scan_ref.h"
#include "models/language_model.h"
#include "models/presets.h"
#include "models/registry.h"
#include "nn/scan/hgrn.h"
#include "nn/scan/mamba.h"
#include "nn/scan/ttt_linear.h"
#include "ops/ops.h"
#include "ops/scan_ops.h"
#include "testing.h"

namespace sw {
namespace {

using kernels::scan::ScanForm;
using sw::testing::all_close;
using sw::testing::random_floats;

Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  return Tensor::from_vector(random_floats(static_cast<size_t>(shape_numel(s)), seed, lo, hi), s);
}

// Output and final state flattened into one vector, so that grad_check seeds both.
Variable flat2(const Variable& a, const Variable& b) {
  return ops::concat({ops::reshape(a, {a.numel()}), ops::reshape(b, {b.numel()})}, 0);
}

// ---- ops vs f64 references ---------------------------------------------------------------------

class SelectiveScanOp : public ::testing::TestWithParam<ScanForm> {};

TEST_P(SelectiveScanOp, GradientsMatchF64Reference) {
  const int64_t B = 2, T = 9, D = 5, N = 3;
  // u, delta, A, Bm, Cm, Dskip, z, delta_bias, h0. A < 0 as the layer makes it (-exp(A_log)).
  std::vector<Tensor> in = {rand_t({B, T, D}, 1), rand_t({B, T, D}, 2), rand_t({D, N}, 3, -2.f, -0.3f),
                            rand_t({B, T, N}, 4), rand_t({B, T, N}, 5), rand_t({D}, 6),
                            rand_t({B, T, D}, 7), rand_t({D}, 8),       rand_t({B, D, N}, 9)};
  const ScanForm form = GetParam();
  auto op = [&](const std::vector<Variable>& v) {
    ops::ScanResult r = ops::selective_scan(v[0], v[1], v[2], v[3], v[4], &v[5], &v[6], &v[7], &v[8], true, true, form);
    return flat2(r.out, r.final_state);
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) {
    kernels::ref::SelectiveScanRefInputs r;
    r.u = x[0].data(), r.delta = x[1].data(), r.A = x[2].data(), r.Bm = x[3].data(), r.Cm = x[4].data();
    r.Dskip = x[5].data(), r.z = x[6].data(), r.delta_bias = x[7].data(), r.h0 = x[8].data();
    r.delta_softplus = true, r.B = B, r.T = T, r.D = D, r.N = N;
    std::vector<double> out(B * T * D + B * D * N);
    kernels::ref::selective_scan_ref_fwd(r, out.data(), out.data() + B * T * D);
    return out;
  };
  GradCheckResult res = grad_check(op, ref, in);
  EXPECT_TRUE(res.ok) << res.report;
}

// Without the optional inputs (no skip, gate, bias, initial state; no softplus) the op still matches.
TEST(SelectiveScanOpMinimal, GradientsMatchF64Reference) {
  const int64_t B = 1, T = 6, D = 3, N = 2;
  std::vector<Tensor> in = {rand_t({B, T, D}, 11), rand_t({B, T, D}, 12, 0.1f, 1.f), rand_t({D, N}, 13, -2.f, -0.3f),
                            rand_t({B, T, N}, 14), rand_t({B, T, N}, 15)};
  auto op = [&](const std::vector<Variable>& v) {
    return ops::selective_scan(v[0], v[1], v[2], v[3], v[4], nullptr, nullptr, nullptr, nullptr, false, false).out;
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) {
    kernels::ref::SelectiveScanRefInputs r;
    r.u = x[0].data(), r.delta = x[1].data(), r.A = x[2].data(), r.Bm = x[3].data(), r.Cm = x[4].data();
    r.B = B, r.T = T, r.D = D, r.N = N;
    std::vector<double> out(B * T * D);
    kernels::ref::selective_scan_ref_fwd(r, out.data(), nullptr);
    return out;
  };
  GradCheckResult res = grad_check(op, ref, in);
  EXPECT_TRUE(res.ok) << res.report;
}

class HgrnOp : public ::testing::TestWithParam<ScanForm> {};

TEST_P(HgrnOp, GradientsMatchF64Reference) {
  const int64_t B = 2, T = 13, D = 6;
  std::vector<Tensor> in = {rand_t({B, T, D}, 21), rand_t({B, T, D}, 22, -1.5f, -0.02f), rand_t({B, D}, 23)};
  const ScanForm form = GetParam();
  auto op = [&](const std::vector<Variable>& v) {
    ops::ScanResult r = ops::hgrn_scan(v[0], v[1], &v[2], true, form);
    return flat2(r.out, r.final_state);
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) {
    std::vector<double> out(B * T * D + B * D);
    kernels::ref::hgrn_ref_fwd(x[0].data(), x[1].data(), x[2].data(), out.data(), out.data() + B * T * D, B, T, D);
    return out;
  };
  GradCheckResult res = grad_check(op, ref, in);
  EXPECT_TRUE(res.ok) << res.report;
}

INSTANTIATE_TEST_SUITE_P(Forms, SelectiveScanOp, ::testing::Values(ScanForm::sequential, ScanForm::blelloch));
INSTANTIATE_TEST_SUITE_P(Forms, HgrnOp, ::testing::Values(ScanForm::sequential, ScanForm::blelloch));

// TTT-Linear: mini-batch 4 over 10 tokens (two full mini-batches and a partial one), outputs and the
// final inner model. `shared`: W0, b0 are the layer's parameters [H, D, D], [H, D], broadcast over the
// batch (their gradient sums over sequences); otherwise per-sequence states [B, H, D, D], [B, H, D].
void check_ttt_op(bool shared) {
  const int64_t B = 2, T = 10, H = 2, D = 6, M = 4;
  Shape w_shape = shared ? Shape{H, D, D} : Shape{B, H, D, D}, b_shape = shared ? Shape{H, D} : Shape{B, H, D};
  std::vector<Tensor> in = {
      rand_t({B, T, H, D}, 31),           rand_t({B, T, H, D}, 32),         rand_t({B, T, H, D}, 33),
      rand_t({B, T, H}, 34, 0.05f, 0.3f), rand_t({M}, 35, 0.2f, 1.f),       rand_t({H, D}, 36, 0.5f, 1.5f),
      rand_t({H, D}, 37, -0.3f, 0.3f),    rand_t(w_shape, 38, -0.3f, 0.3f), rand_t(b_shape, 39, -0.3f, 0.3f)};
  auto op = [&](const std::vector<Variable>& v) {
    ops::TttLinearResult r = ops::ttt_linear(v[0], v[1], v[2], v[3], &v[4], v[5], v[6], v[7], v[8], M, 1e-6, true);
    return ops::concat(
        {ops::reshape(r.out, {r.out.numel()}), ops::reshape(r.W, {r.W.numel()}), ops::reshape(r.b, {r.b.numel()})}, 0);
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) {
    std::vector<double> W0 = x[7], b0 = x[8];
    if (shared) {  // the reference takes one inner model per sequence
      W0.clear(), b0.clear();
      for (int64_t i = 0; i < B; ++i)
        W0.insert(W0.end(), x[7].begin(), x[7].end()), b0.insert(b0.end(), x[8].begin(), x[8].end());
    }
    kernels::ref::TttLinearRefInputs r;
    r.xq = x[0].data(), r.xk = x[1].data(), r.xv = x[2].data(), r.eta = x[3].data(), r.token_eta = x[4].data();
    r.ln_gamma = x[5].data(), r.ln_beta = x[6].data(), r.W0 = W0.data(), r.b0 = b0.data();
    r.B = B, r.T = T, r.H = H, r.D = D, r.mini_batch = M;
    const int64_t n_out = B * T * H * D, n_W = B * H * D * D;
    std::vector<double> out(n_out + n_W + B * H * D);
    kernels::ref::ttt_linear_ref_fwd(r, out.data(), out.data() + n_out, out.data() + n_out + n_W);
    return out;
  };
  GradCheckResult res = grad_check(op, ref, in);
  EXPECT_TRUE(res.ok) << res.report;
}

TEST(TttLinearOp, GradientsMatchF64ReferenceWithSharedInitialModel) { check_ttt_op(true); }
TEST(TttLinearOp, GradientsMatchF64ReferenceWithPerSequenceInitialModel) { check_ttt_op(false); }

TEST(ScanOps, ErrorsNameTheOpAndShapes) {
  Variable u(Tensor::zeros({2, 5, 4})), A(Tensor::zeros({4, 3})), Bm(Tensor::zeros({2, 5, 2}));
  try {
    ops::selective_scan(u, u, A, Bm, Bm, nullptr, nullptr, nullptr, nullptr, true, false);
    FAIL() << "mismatched Bm accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[selective_scan] Bm must be f32[2, 5, 3], got f32[2, 5, 2]"),
              std::string::npos)
        << e.what();
  }
  Variable x(Tensor::zeros({2, 5, 4})), g(Tensor::zeros({2, 4, 4}));
  EXPECT_THROW(ops::hgrn_scan(x, g, nullptr, false), Error);
  Tensor h = Tensor::zeros({3, 4});
  EXPECT_THROW(ops::hgrn_step(Tensor::zeros({2, 4}), Tensor::zeros({2, 4}), h), Error);
}

// ---- layers --------------------------------------------------------------------------------------

std::unique_ptr<nn::Mixer> make_layer(const std::string& type, const nlohmann::json& extra, int64_t d_model,
                                      uint64_t seed = 7) {
  models::ModelConfig mc;
  mc.d_model = d_model;
  mc.n_layers = 2;
  nlohmann::json j = extra;
  j["type"] = type;
  std::mt19937_64 rng(seed);
  return models::find_mixer(type, "test").make(j, mc, nn::MixerSite{0, mc.n_layers}, rng, "test");
}

// At the reference init (projections ~N(0, 0.02)) the layers' outputs are ~1e-3 and the states barely
// move, which would let an absolute tolerance pass anything. Scaling the projections by 10 (std 0.2,
// as prefill_decode_test does with init_std) gives outputs of size ~0.1-1 and states that depend
// strongly on the history. dt_proj keeps its own U(+-1/sqrt(dt_rank)) init.
void amplify(nn::Mixer& layer) {
  layer.visit_parameters([](const std::string& name, nn::Parameter& p) {
    const std::string suffix = "proj.weight";
    bool proj = name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (!proj || name == "dt_proj.weight") return;
    float* w = p.var.mutable_data().data<float>();
    for (int64_t i = 0; i < p.var.numel(); ++i) w[i] *= 10.f;
  });
}

struct LayerCase {
  std::string name, type;
  nlohmann::json cfg;
};

std::vector<LayerCase> layer_cases() {
  return {
      {"mamba", "mamba", nlohmann::json::object()},
      {"mamba_blelloch", "mamba", {{"scan_form", "blelloch"}, {"d_state", 8}}},
      {"hgrn", "hgrn", nlohmann::json::object()},
      {"hgrn_conv_nobound_noaffine",
       "hgrn",
       {{"use_short_conv", true}, {"use_lower_bound", false}, {"expand_ratio", 2}, {"elementwise_affine", false}}},
      {"hgrn_blelloch_conv_bias", "hgrn", {{"scan_form", "blelloch"}, {"use_short_conv", true}, {"conv_bias", true}}},
      {"ttt_linear", "ttt-linear", {{"n_heads", 2}}},
      {"ttt_linear_gate_mb8", "ttt-linear", {{"n_heads", 4}, {"use_gate", true}, {"mini_batch", 8}}},
  };
}

class ScanLayer : public ::testing::TestWithParam<LayerCase> {};

TEST_P(ScanLayer, ForwardBackwardFiniteWithEveryParameterGradient) {
  const LayerCase& c = GetParam();
  const int64_t B = 2, T = 21, Dm = 32;
  auto layer = make_layer(c.type, c.cfg, Dm);
  amplify(*layer);
  Variable x(rand_t({B, T, Dm}, 41), true);
  Variable y = layer->forward(x, {});
  ASSERT_EQ(y.shape(), (Shape{B, T, Dm}));
  for (float v : y.data().to_floats()) ASSERT_TRUE(std::isfinite(v));
  Variable loss = ops::sum(ops::mul(y, Variable(rand_t({B, T, Dm}, 42))));
  loss.backward();
  ASSERT_TRUE(x.grad().defined());
  for (float v : x.grad().to_floats()) ASSERT_TRUE(std::isfinite(v));
  int64_t checked = 0;
  layer->visit_parameters([&](const std::string& name, nn::Parameter& p) {
    ++checked;
    ASSERT_TRUE(p.var.grad().defined()) << name;
    double norm = 0;
    for (float v : p.var.grad().to_floats()) {
      ASSERT_TRUE(std::isfinite(v)) << name;
      norm += static_cast<double>(v) * v;
    }
    EXPECT_GT(norm, 0.0) << name << " gets an all-zero gradient";
  });
  EXPECT_GT(checked, 5);
}

// Segments of 5, 1, 1, 19 and 14 tokens (prefill, two decode steps, prefills that start and end inside
// TTT mini-batches; with mini-batch 8 also whole mini-batches in the middle of a prefill) continue the
// state exactly. fp32 throughout; the forms differ only in summation order (whole-sequence kernel vs
// per-token steps, TTT's dual form vs its primal step): ~1e-7 relative per operation on outputs of
// size 0.1-2. Measured worst differences: ~1e-6 (TTT), ~1e-7 (the others); 2e-5 absolute + 1e-4
// relative leaves a 20x margin, while a state that is not carried moves the outputs by 0.1-2.
TEST_P(ScanLayer, SegmentsWithCarriedStateEqualOnePass) {
  const LayerCase& c = GetParam();
  const int64_t B = 2, T = 40, Dm = 32;
  auto layer = make_layer(c.type, c.cfg, Dm);
  amplify(*layer);
  NoGradGuard g;
  Tensor x = rand_t({B, T, Dm}, 51);
  Tensor full = layer->forward(Variable(x), {}).data();
  auto state = layer->new_state(B);
  const int64_t bytes0 = state->bytes();
  std::vector<int64_t> cuts = {0, 5, 6, 7, 26, 40};
  for (size_t s = 0; s + 1 < cuts.size(); ++s) {
    nn::MixerContext ctx;
    ctx.position = cuts[s];
    ctx.state = state.get();
    Tensor part = layer->forward(Variable(x.slice(1, cuts[s], cuts[s + 1]).contiguous()), ctx).data();
    Tensor want = full.slice(1, cuts[s], cuts[s + 1]).contiguous();
    EXPECT_TRUE(all_close(part.to_floats(), want.to_floats(), 2e-5, 1e-4))
        << "segment [" << cuts[s] << ", " << cuts[s + 1] << ")";
  }
  // A recurrent state does not grow with the context, and state_bytes() says what it holds.
  EXPECT_EQ(state->bytes(), bytes0);
  EXPECT_EQ(layer->state_bytes(T), layer->state_bytes(1));
  EXPECT_EQ(layer->state_bytes(T), state->bytes() / B);
  EXPECT_GT(layer->extra_flops_per_token(T), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Layers, ScanLayer, ::testing::ValuesIn(layer_cases()),
                         [](const ::testing::TestParamInfo<LayerCase>& i) { return i.param.name; });

// With gradients on, a stateful forward of Mamba / HGRN runs the differentiable sequence op from the
// carried state (the decode step is only taken without a tape), so training from a state works.
TEST(ScanLayerState, StatefulForwardIsDifferentiableForMambaAndHgrn) {
  for (std::string type : {"mamba", "hgrn"}) {
    auto layer = make_layer(type, nlohmann::json::object(), 16);
    auto state = layer->new_state(1);
    {
      NoGradGuard g;
      layer->forward(Variable(rand_t({1, 6, 16}, 61)), {0, state.get()});
    }
    Variable x(rand_t({1, 1, 16}, 62), true);
    Variable y = layer->forward(x, {6, state.get()});
    ops::sum(y).backward();
    ASSERT_TRUE(x.grad().defined()) << type;
    layer->visit_parameters(
        [&](const std::string& name, nn::Parameter& p) { EXPECT_TRUE(p.var.grad().defined()) << type << " " << name; });
  }
}

// TTT-Linear's partial mini-batches go through the (non-differentiable) decode step: with a tape that
// is refused rather than silently cutting the gradient; on mini-batch boundaries it is differentiable.
TEST(ScanLayerState, TttStatefulForwardOffBoundaryNeedsNoGrad) {
  auto layer = make_layer("ttt-linear", {{"n_heads", 2}, {"mini_batch", 4}}, 16);
  auto state = layer->new_state(1);
  Variable x(rand_t({1, 8, 16}, 63), true);
  Variable y = layer->forward(x, {0, state.get()});  // two whole mini-batches: the differentiable dual form
  ops::sum(y).backward();
  EXPECT_TRUE(x.grad().defined());
  Variable x2(rand_t({1, 3, 16}, 64), true);
  EXPECT_THROW(layer->forward(x2, {8, state.get()}), Error);
}

// TTT's RoPE rotates consecutive channel pairs (2i, 2i + 1) by pos * base^(-2i / D) (the reference's
// permute_qk / rotate-half / undo_permute_qk); checked against that formula in f64.
TEST(TttLinearRope, RotatesConsecutivePairs) {
  const int64_t T = 5, H = 2, D = 8;
  const double base = 10000.0;
  Tensor x = rand_t({1, T, H, D}, 81);
  std::vector<int32_t> pos = {0, 3, 7, 15, 1};
  Tensor y = nn::rope_consecutive_pairs(Variable(x), Tensor::from_vector(pos, {T}), base).data();
  std::vector<float> xv = x.to_floats(), yv = y.to_floats();
  std::vector<double> want(xv.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < D / 2; ++i) {
        const int64_t o = (t * H + h) * D + 2 * i;
        const double a = pos[t] * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(D));
        want[o] = xv[o] * std::cos(a) - xv[o + 1] * std::sin(a);
        want[o + 1] = xv[o + 1] * std::cos(a) + xv[o] * std::sin(a);
      }
  // fp32 rotation of values ~1: a few ulps.
  EXPECT_TRUE(all_close(yv, want, 1e-6, 1e-6));
}

TEST(MambaInit, DtBiasAndALogFollowTheReference) {
  auto layer = make_layer("mamba", nlohmann::json::object(), 32);
  for (nn::Parameter* p : layer->parameters()) {
    std::vector<float> v = p->var.data().to_floats();
    if (p->name == "dt_proj.bias") {
      for (float b : v) {  // softplus(bias) = the initial dt, log-uniform in [1e-3, 0.1]
        double dt = std::log1p(std::exp(static_cast<double>(b)));
        EXPECT_GE(dt, 1e-3 * (1 - 1e-5));
        EXPECT_LE(dt, 0.1 * (1 + 1e-5));
      }
    } else if (p->name == "A_log") {
      ASSERT_EQ(p->var.data().shape(), (Shape{64, 16}));
      for (int64_t i = 0; i < 64 * 16; ++i) EXPECT_FLOAT_EQ(v[i], std::log(static_cast<float>(i % 16 + 1)));
    } else if (p->name == "D") {
      for (float d : v) EXPECT_EQ(d, 1.f);
    }
  }
}

// After to_bf16_weights() (inference) every 2-d parameter is bf16; the layers still run, reading
// their non-GEMM parameters back as f32.
TEST(ScanLayerBf16, LayersRunWithBf16Weights) {
  for (const LayerCase& c : layer_cases()) {
    auto layer = make_layer(c.type, c.cfg, 32);
    NoGradGuard g;
    Tensor x = rand_t({1, 5, 32}, 71);
    Tensor ref = layer->forward(Variable(x), {}).data();
    layer->to_bf16_weights();
    auto state = layer->new_state(1);
    Tensor y = layer->forward(Variable(x), {0, state.get()}).data();
    // bf16 weights round at 2^-9 relative; outputs of size ~0.1 move by ~1e-3.
    EXPECT_TRUE(all_close(y.to_floats(), ref.to_floats(), 2e-2, 5e-2)) << c.name;
  }
}

// ---- presets -------------------------------------------------------------------------------------

TEST(ScanPresets, SmallPresetsMatchTransformerSmallWithinFivePercent) {
  const double target =
      static_cast<double>(models::LanguageModel(models::resolve_preset("transformer-small")).num_parameters());
  for (std::string name : {"mamba-small", "hgrn-small", "ttt-linear-small"}) {
    models::LanguageModel m(models::resolve_preset(name));
    const double n = static_cast<double>(m.num_parameters());
    std::printf("%-18s %8.0f parameters (%+.2f%% vs transformer-small %.0f)\n", name.c_str(), n,
                100.0 * (n / target - 1.0), target);
    EXPECT_LE(std::fabs(n / target - 1.0), 0.05) << name;
  }
}

}  // namespace
}  // namespace sw
