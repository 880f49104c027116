// Linear-attention family layers: linear attention, RetNet, GLA, HGRN2, Mamba2 (SSD), RWKV-6.
//
// 1. Ops (ops/linear_attention_ops.h) against the f64 reference (kernels/ref/gated_linear_attention_ref.h):
//    - forward values of both paths (recurrent kernel without autograd, chunk kernel with it) and of
//      the decode step: fp32 state updates over T = 9..13 tokens of O(1) terms round at ~1e-7 x sqrt(T)
//      relative, so 2e-5 x max|ref| absolute has a 10x margin and still catches any wrong term;
//    - gradients of every input through both outputs (sequence output and final state) against central
//      differences of the f64 reference, with grad_check's defaults (atol 1e-4, rtol 1e-3: fp32 backward
//      vs f64; sums of tens of O(1) terms round at ~1e-6), in every gate mode plus the RWKV-6 read-out;
//    - the normaliser op against its f64 formula, and errors that name the op and the shapes.
// 2. Layers, built through the registry from JSON (so the registration lines are covered too), with
//    their options on: forward and backward give finite values and a gradient for every parameter; a
//    sequence fed in three segments (5 tokens, one T = 1 decode step, 15 tokens) with the state carried
//    equals one stateless pass; state bytes are flat in the context and match the live state.
//    Tolerance 1e-5 x max|one pass|: the stateless pass runs the chunk kernel (chunk 8: several
//    chunks), the segments the recurrent kernel and the step, i.e. the same fp32 sums in other orders
//    (~1e-6 relative after the projections and norms), so 1e-5 keeps a 10x margin.
// 3. Presets: the small presets are within 5% of transformer-small's parameter count; mamba2-115m's
//    count is printed and checked to be ~115M.
// Prefill == decode on the tiny presets is checked by prefill_decode_test.
#include <cmath>
#include <cstdio>
#include <random>

#include "autograd/gradcheck.h"
#include "kernels/ref/gated_linear_attention_ref.h"
#include "models/language_model.h"
#include "models/presets.h"
#include "models/registry.h"
#include "nn/linear_attention/retnet.h"
#include "ops/linear_attention_ops.h"
#include "ops/ops.h"
#include "testing.h"

namespace sw {
namespace {

using kernels::GlaDims;
using kernels::GlaGate;
using sw::testing::random_floats;

Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  return Tensor::from_vector(random_floats(static_cast<size_t>(shape_numel(s)), seed, lo, hi), s);
}

// max |a - b| / max |b|: the error relative to the scale of the reference.
double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    double e = std::fabs(static_cast<double>(a[i]) - b[i]);
    num = std::isfinite(e) ? std::max(num, e) : INFINITY;
    den = std::max(den, std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  return rel_err(a, std::vector<double>(b.begin(), b.end()));
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- ops vs the f64 reference ----------------------------------------------------------------

// The five gate / read-out combinations the kernel covers.
enum class Mode { kNone, kHeadConst, kScalar, kChannel, kRwkv6 };

struct OpCase {
  Mode mode;
  const char* name;
};

GlaGate gate_of(Mode m) {
  switch (m) {
    case Mode::kNone: return GlaGate::kNone;
    case Mode::kHeadConst: return GlaGate::kHeadConst;
    case Mode::kScalar: return GlaGate::kScalar;
    default: return GlaGate::kChannel;
  }
}

struct OpProblem {
  GlaDims d{2, 9, 2, 4, 3};
  Mode mode;
  GlaGate gate;
  double scale;
  // Inputs in grad_check order: q, k, v, g (if any), u (if any), h0.
  std::vector<Tensor> inputs;
  int g_index = -1, u_index = -1, h0_index = -1;
};

OpProblem make_op_problem(Mode m, int64_t T = 9, uint64_t seed = 100) {
  OpProblem p;
  p.d.seq_len = T;
  p.mode = m;
  p.gate = gate_of(m);
  p.scale = 1.0 / std::sqrt(static_cast<double>(p.d.key_dim));
  const GlaDims& d = p.d;
  p.inputs.push_back(rand_t({d.batch, T, d.heads, d.key_dim}, seed + 1));
  p.inputs.push_back(rand_t({d.batch, T, d.heads, d.key_dim}, seed + 2));
  p.inputs.push_back(rand_t({d.batch, T, d.heads, d.value_dim}, seed + 3));
  // Log decays in [-1, -0.02]: from ~1-token to ~50-token memories, the range the layers produce.
  if (p.gate == GlaGate::kHeadConst) p.g_index = 3, p.inputs.push_back(rand_t({d.heads}, seed + 4, -0.5f, -0.02f));
  if (p.gate == GlaGate::kScalar) p.g_index = 3, p.inputs.push_back(rand_t({d.batch, T, d.heads}, seed + 4, -1.f, -0.02f));
  if (p.gate == GlaGate::kChannel)
    p.g_index = 3, p.inputs.push_back(rand_t({d.batch, T, d.heads, d.key_dim}, seed + 4, -1.f, -0.02f));
  if (m == Mode::kRwkv6) {
    p.u_index = static_cast<int>(p.inputs.size());
    p.inputs.push_back(rand_t({d.heads, d.key_dim}, seed + 5));
  }
  p.h0_index = static_cast<int>(p.inputs.size());
  p.inputs.push_back(rand_t({d.batch, d.heads, d.key_dim, d.value_dim}, seed + 6));
  return p;
}

// o then the final state, from the f64 reference.
std::vector<double> ref_outputs(const OpProblem& p, const std::vector<std::vector<double>>& x) {
  const GlaDims& d = p.d;
  std::vector<double> out(d.batch * d.seq_len * d.heads * d.value_dim + d.batch * d.heads * d.key_dim * d.value_dim);
  kernels::ref::gla_forward_ref(d, p.gate, p.scale, x[0].data(), x[1].data(), x[2].data(),
                                p.g_index >= 0 ? x[p.g_index].data() : nullptr,
                                p.u_index >= 0 ? x[p.u_index].data() : nullptr, x[p.h0_index].data(), out.data(),
                                out.data() + d.batch * d.seq_len * d.heads * d.value_dim);
  return out;
}

ops::GlaOutput run_op(const OpProblem& p, const std::vector<Variable>& v, int64_t chunk) {
  return ops::gated_linear_attention(v[0], v[1], v[2], p.gate, p.g_index >= 0 ? &v[p.g_index] : nullptr,
                                     p.u_index >= 0 ? &v[p.u_index] : nullptr, &v[p.h0_index], p.scale, chunk);
}

Variable flat2(const Variable& a, const Variable& b) {
  return ops::concat({ops::reshape(a, {a.numel()}), ops::reshape(b, {b.numel()})}, 0);
}

class GlaOp : public ::testing::TestWithParam<OpCase> {};

TEST_P(GlaOp, ForwardOfBothPathsAndTheStepMatchF64Reference) {
  const OpProblem p = make_op_problem(GetParam().mode, 13);
  std::vector<std::vector<double>> x;
  for (const Tensor& t : p.inputs) x.push_back(t.to_doubles());
  const std::vector<double> want = ref_outputs(p, x);
  // Recurrent path: no input needs a gradient.
  std::vector<Variable> plain;
  for (const Tensor& t : p.inputs) plain.emplace_back(t);
  ops::GlaOutput rr = run_op(p, plain, 4);
  EXPECT_FALSE(rr.o.requires_grad());
  std::vector<float> rec = flat2(rr.o, rr.state).data().to_floats();
  EXPECT_LE(rel_err(rec, want), 2e-5) << "recurrent path";
  // Chunk path: q needs a gradient; chunk 4 over 13 tokens leaves a partial last chunk.
  std::vector<Variable> tracked = plain;
  tracked[0] = Variable(p.inputs[0], true);
  ops::GlaOutput r = run_op(p, tracked, 4);
  EXPECT_TRUE(r.o.requires_grad());
  EXPECT_LE(rel_err(flat2(r.o, r.state).data().to_floats(), want), 2e-5) << "chunk path";
  // Decode steps from h0, one token at a time, must give the same outputs and final state.
  const GlaDims& d = p.d;
  Tensor state = p.inputs[p.h0_index].clone();
  std::vector<float> steps(d.batch * d.seq_len * d.heads * d.value_dim);
  for (int64_t t = 0; t < d.seq_len; ++t) {
    auto tok = [&](int i) { return p.inputs[i].slice(1, t, t + 1).contiguous(); };
    Tensor g;
    if (p.g_index >= 0) g = p.gate == GlaGate::kHeadConst ? p.inputs[p.g_index] : tok(p.g_index);
    Tensor u = p.u_index >= 0 ? p.inputs[p.u_index] : Tensor();
    Tensor o = ops::gated_linear_attention_step(tok(0), tok(1), tok(2), p.gate, g.defined() ? &g : nullptr,
                                                u.defined() ? &u : nullptr, state, p.scale);
    std::vector<float> of = o.to_floats();
    for (int64_t b = 0; b < d.batch; ++b)
      for (int64_t i = 0; i < d.heads * d.value_dim; ++i)
        steps[(b * d.seq_len + t) * d.heads * d.value_dim + i] = of[b * d.heads * d.value_dim + i];
  }
  std::vector<float> st = state.to_floats();
  steps.insert(steps.end(), st.begin(), st.end());
  EXPECT_LE(rel_err(steps, want), 2e-5) << "decode steps";
}

TEST_P(GlaOp, GradientsMatchF64Reference) {
  const OpProblem p = make_op_problem(GetParam().mode);
  auto op = [&](const std::vector<Variable>& v) {
    ops::GlaOutput r = run_op(p, v, 4);  // chunks of 4 over 9 tokens: two full and a partial one
    return flat2(r.o, r.state);
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) { return ref_outputs(p, x); };
  GradCheckResult res = grad_check(op, ref, p.inputs);
  EXPECT_TRUE(res.ok) << GetParam().name << ": " << res.report;
}

INSTANTIATE_TEST_SUITE_P(Gates, GlaOp,
                         ::testing::Values(OpCase{Mode::kNone, "none"}, OpCase{Mode::kHeadConst, "head_const"},
                                           OpCase{Mode::kScalar, "scalar"}, OpCase{Mode::kChannel, "channel"},
                                           OpCase{Mode::kRwkv6, "rwkv6"}),
                         [](const ::testing::TestParamInfo<OpCase>& i) { return std::string(i.param.name); });

// Without an initial state and with the gate not differentiated (RetNet's fixed decays).
TEST(GlaOpMinimal, GradientsWithoutH0AndWithAFixedGate) {
  const int64_t B = 1, T = 7, H = 3, K = 2, V = 5;
  std::vector<Tensor> in = {rand_t({B, T, H, K}, 1), rand_t({B, T, H, K}, 2), rand_t({B, T, H, V}, 3),
                            rand_t({H}, 4, -0.6f, -0.05f)};
  const double scale = 0.7;
  auto op = [&](const std::vector<Variable>& v) {
    ops::GlaOutput r = ops::gated_linear_attention(v[0], v[1], v[2], GlaGate::kHeadConst, &v[3], nullptr, nullptr,
                                                   scale, 3);
    return flat2(r.o, r.state);
  };
  auto ref = [&](const std::vector<std::vector<double>>& x) {
    std::vector<double> out(B * T * H * V + B * H * K * V);
    kernels::ref::gla_forward_ref({B, T, H, K, V}, GlaGate::kHeadConst, scale, x[0].data(), x[1].data(), x[2].data(),
                                  x[3].data(), nullptr, nullptr, out.data(), out.data() + B * T * H * V);
    return out;
  };
  GradCheckOptions o;
  o.wrt = {true, true, true, false};
  GradCheckResult res = grad_check(op, ref, in, o);
  EXPECT_TRUE(res.ok) << res.report;
}

TEST(LinearAttentionNormalize, GradientsMatchF64Formula) {
  // Denominators in [0.5, 2] as a positive feature map gives them.
  Tensor x = rand_t({2, 3, 2, 5}, 7);
  float* px = x.data<float>();
  for (int64_t r = 0; r < 12; ++r) px[r * 5 + 4] = 0.5f + 0.75f * (1.f + px[r * 5 + 4]);
  const double eps = 1e-6;
  auto op = [&](const std::vector<Variable>& v) { return ops::linear_attention_normalize(v[0], eps); };
  auto ref = [&](const std::vector<std::vector<double>>& in) {
    std::vector<double> y;
    for (int64_t r = 0; r < 12; ++r)
      for (int i = 0; i < 4; ++i) y.push_back(in[0][r * 5 + i] / (in[0][r * 5 + 4] + eps));
    return y;
  };
  GradCheckResult res = grad_check(op, ref, {x});
  EXPECT_TRUE(res.ok) << res.report;
  std::vector<float> y = ops::linear_attention_normalize(Variable(x), eps).data().to_floats();
  std::vector<double> want = ref({x.to_doubles()});
  EXPECT_LE(rel_err(y, want), 1e-6);  // one fp32 division per element
}

TEST(RepeatHeads, GradientsMatchF64Formula) {
  const int64_t B = 2, T = 3, G = 2, D = 4, n = 3;
  auto op = [&](const std::vector<Variable>& v) { return ops::repeat_heads(v[0], n); };
  auto ref = [&](const std::vector<std::vector<double>>& in) {
    std::vector<double> y;
    for (int64_t r = 0; r < B * T * G; ++r)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < D; ++i) y.push_back(in[0][r * D + i]);
    return y;
  };
  GradCheckResult res = grad_check(op, ref, {rand_t({B, T, G, D}, 9)});
  EXPECT_TRUE(res.ok) << res.report;
}

TEST(SplitLast, GradientsThroughEveryPieceMatchF64Formula) {
  const std::vector<int64_t> sizes = {3, 1, 4};
  auto op = [&](const std::vector<Variable>& v) {
    std::vector<Variable> p = ops::split_last(v[0], sizes);
    return ops::concat({ops::reshape(p[0], {p[0].numel()}), ops::reshape(p[1], {p[1].numel()}),
                        ops::reshape(p[2], {p[2].numel()})}, 0);
  };
  auto ref = [&](const std::vector<std::vector<double>>& in) {
    std::vector<double> y;
    for (int64_t lo : {0, 3, 4})
      for (int64_t r = 0; r < 6; ++r)
        for (int64_t i = lo; i < (lo == 0 ? 3 : lo == 3 ? 4 : 8); ++i) y.push_back(in[0][r * 8 + i]);
    return y;
  };
  GradCheckResult res = grad_check(op, ref, {rand_t({2, 3, 8}, 10)});
  EXPECT_TRUE(res.ok) << res.report;
  std::string m = error_of([&] { ops::split_last(Variable(rand_t({2, 3, 8}, 10)), {3, 4}); });
  EXPECT_NE(m.find("[split_last]"), std::string::npos) << m;
  EXPECT_NE(m.find("f32[2, 3, 8]"), std::string::npos) << m;
}

TEST(GlaOpErrors, NameTheOpAndTheShapes) {
  Variable q(rand_t({2, 5, 2, 4}, 1)), k(rand_t({2, 5, 2, 4}, 2)), v(rand_t({2, 5, 2, 3}, 3));
  Variable bad_k(rand_t({2, 5, 2, 6}, 4)), g(rand_t({2, 5, 2}, 5));
  std::string m = error_of([&] { ops::gated_linear_attention(q, bad_k, v, GlaGate::kNone, nullptr, nullptr, nullptr, 1); });
  EXPECT_NE(m.find("[gated_linear_attention]"), std::string::npos) << m;
  EXPECT_NE(m.find("f32[2, 5, 2, 6]"), std::string::npos) << m;
  m = error_of([&] { ops::gated_linear_attention(q, k, v, GlaGate::kChannel, &g, nullptr, nullptr, 1); });
  EXPECT_NE(m.find("f32[2, 5, 2, 4]"), std::string::npos) << m;  // the shape g must have
  EXPECT_NE(m.find("f32[2, 5, 2]"), std::string::npos) << m;     // the shape it has
  m = error_of([&] { ops::gated_linear_attention(q, k, v, GlaGate::kScalar, nullptr, nullptr, nullptr, 1); });
  EXPECT_NE(m.find("needs g"), std::string::npos) << m;
  Tensor state = Tensor::zeros({2, 2, 4, 4});
  m = error_of([&] {
    ops::gated_linear_attention_step(q.data().slice(1, 0, 1).contiguous(), k.data().slice(1, 0, 1).contiguous(),
                                     v.data().slice(1, 0, 1).contiguous(), GlaGate::kNone, nullptr, nullptr, state, 1);
  });
  EXPECT_NE(m.find("[gated_linear_attention_step]"), std::string::npos) << m;
  EXPECT_NE(m.find("f32[2, 2, 4, 3]"), std::string::npos) << m;
  m = error_of([&] { ops::gated_linear_attention_step(q.data(), k.data(), v.data(), GlaGate::kNone, nullptr, nullptr, state, 1); });
  EXPECT_NE(m.find("one token"), std::string::npos) << m;
}

// ---- layers ----------------------------------------------------------------------------------

struct LayerCase {
  const char* name;
  const char* json;
};

constexpr int64_t kD = 32;

std::unique_ptr<nn::Mixer> make_layer(const LayerCase& c, uint64_t seed = 11) {
  models::ModelConfig m;
  m.d_model = kD;
  m.n_layers = 2;
  nlohmann::json j = nlohmann::json::parse(c.json);
  std::mt19937_64 rng(seed);
  return models::find_mixer(j.at("type").get<std::string>(), c.name).make(j, m, nn::MixerSite{0, m.n_layers}, rng, c.name);
}

class LinearAttentionLayer : public ::testing::TestWithParam<LayerCase> {};

TEST_P(LinearAttentionLayer, ForwardBackwardFiniteWithAGradientForEveryParameter) {
  auto layer = make_layer(GetParam());
  Variable x(rand_t({2, 19, kD}, 3), true);
  Variable y = layer->forward(x, nn::MixerContext{});
  ASSERT_EQ(y.shape(), x.shape());
  for (float f : y.data().to_floats()) ASSERT_TRUE(std::isfinite(f));
  y.backward(rand_t(y.shape(), 4));
  ASSERT_TRUE(x.grad().defined());
  for (float f : x.grad().to_floats()) ASSERT_TRUE(std::isfinite(f));
  for (nn::Parameter* p : layer->parameters()) {
    ASSERT_TRUE(p->var.grad().defined()) << p->name;
    EXPECT_EQ(p->var.grad().shape(), p->var.data().shape()) << p->name;
    for (float f : p->var.grad().to_floats()) ASSERT_TRUE(std::isfinite(f)) << p->name;
  }
}

TEST_P(LinearAttentionLayer, SegmentsWithCarriedStateEqualOnePass) {
  auto layer = make_layer(GetParam());
  const int64_t B = 2, T = 21;
  Tensor x = rand_t({B, T, kD}, 5);
  // The stateless pass with autograd on runs the training path (chunk kernel, chunk_size 8).
  std::vector<float> full = layer->forward(Variable(x, true), nn::MixerContext{}).data().to_floats();
  NoGradGuard ng;
  auto state = layer->new_state(B);
  std::vector<float> seg;
  const int64_t cuts[] = {0, 5, 6, T};  // a prefill, one decode step, the rest
  for (int s = 0; s < 3; ++s) {
    nn::MixerContext ctx;
    ctx.position = cuts[s];
    ctx.state = state.get();
    Tensor y = layer->forward(Variable(x.slice(1, cuts[s], cuts[s + 1]).contiguous()), ctx).data();
    // Reassemble [B, T, D] in token order from the [B, t1 - t0, D] pieces.
    seg.resize(full.size());
    std::vector<float> yf = y.to_floats();
    const int64_t n = cuts[s + 1] - cuts[s];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < n; ++t)
        for (int64_t c = 0; c < kD; ++c) seg[(b * T + cuts[s] + t) * kD + c] = yf[(b * n + t) * kD + c];
  }
  const double err = rel_err(seg, full);
  std::printf("%-34s segments vs one pass: max err / max |y| = %.2e\n", GetParam().name, err);
  EXPECT_LE(err, 1e-5) << GetParam().name;
  EXPECT_EQ(state->bytes(), B * layer->state_bytes(1));  // state_bytes is per sequence
}

// Inference with weights converted to bf16 (Module::to_bf16_weights: every 2-d parameter, including
// conv taps, RWKV-6's static mixes and bonus, which the layers widen back to f32 for their non-GEMM
// ops). bf16 rounds each weight to ~2^-9 relative; through the 2-4 chained projections and norms of
// a layer that is a few 1e-3 of max |y|, so 3e-2 bounds it with margin while a wrong path (a weight
// read as the wrong dtype) would be off by O(1).
TEST_P(LinearAttentionLayer, Bf16WeightsServeInference) {
  auto f32 = make_layer(GetParam()), bf16 = make_layer(GetParam());
  bf16->to_bf16_weights();
  NoGradGuard ng;
  Tensor x = rand_t({2, 12, kD}, 6);
  auto run = [&](nn::Mixer& m) {
    auto state = m.new_state(2);
    std::vector<float> out;
    for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, 10}, {10, 11}, {11, 12}}) {
      nn::MixerContext ctx;
      ctx.position = t0;
      ctx.state = state.get();
      std::vector<float> y = m.forward(Variable(x.slice(1, t0, t1).contiguous()), ctx).data().to_floats();
      out.insert(out.end(), y.begin(), y.end());
    }
    return out;
  };
  const std::vector<float> a = run(*f32), b = run(*bf16);
  const double err = rel_err(b, a);
  EXPECT_LE(err, 3e-2) << GetParam().name;
  EXPECT_GT(err, 0) << "the weights were not converted";
}

TEST_P(LinearAttentionLayer, StateIsFlatInTheContext) {
  auto layer = make_layer(GetParam());
  EXPECT_GT(layer->state_bytes(1), 0);
  EXPECT_EQ(layer->state_bytes(1), layer->state_bytes(100000));
  EXPECT_EQ(layer->extra_flops_per_token(1), layer->extra_flops_per_token(100000));
  EXPECT_EQ(layer->new_state(1)->bytes(), layer->state_bytes(1));
}

// Every layer with its options on, chunk 8 so that 19-21 tokens span several chunks.
INSTANTIATE_TEST_SUITE_P(
    Layers, LinearAttentionLayer,
    ::testing::Values(
        LayerCase{"linear_attn_elu", R"({"type": "linear-attn", "n_heads": 2, "chunk_size": 8})"},
        LayerCase{"linear_attn_hedgehog_normalized",
                  R"({"type": "linear-attn", "n_heads": 2, "feature_map": "hedgehog", "normalize": true, "chunk_size": 8})"},
        LayerCase{"linear_attn_identity_no_norm",
                  R"({"type": "linear-attn", "n_heads": 4, "feature_map": "identity", "output_norm": "identity", "chunk_size": 8})"},
        LayerCase{"retnet", R"({"type": "retnet", "n_heads": 4, "chunk_size": 8})"},
        LayerCase{"retnet_conv_no_gate",
                  R"({"type": "retnet", "n_heads": 2, "use_short_conv": true, "use_output_gate": false, "chunk_size": 8})"},
        LayerCase{"gla", R"({"type": "gla", "n_heads": 2, "chunk_size": 8})"},
        LayerCase{"gla_conv_clamp",
                  R"({"type": "gla", "n_heads": 2, "use_short_conv": true, "conv_bias": true, "clamp_min": -0.03, "chunk_size": 8})"},
        LayerCase{"hgrn2", R"({"type": "hgrn2", "expand_ratio": 8, "chunk_size": 8})"},
        LayerCase{"hgrn2_bound_gate_conv",
                  R"({"type": "hgrn2", "expand_ratio": 8, "lower_bound": 0.3, "use_output_gate": true, "use_short_conv": true, "chunk_size": 8})"},
        LayerCase{"mamba2", R"({"type": "mamba2", "d_state": 8, "headdim": 16, "chunk_size": 8})"},
        LayerCase{"mamba2_two_groups", R"({"type": "mamba2", "d_state": 8, "headdim": 8, "ngroups": 2, "chunk_size": 8})"},
        LayerCase{"rwkv6", R"({"type": "rwkv6", "n_heads": 2, "proj_low_rank_dim": 8, "gate_low_rank_dim": 16, "chunk_size": 8})"}),
    [](const ::testing::TestParamInfo<LayerCase>& i) { return std::string(i.param.name); });

TEST(LinearAttentionLayers, BadConfigsNameTheLayerAndTheField) {
  auto err = [](const char* json) { return error_of([&] { make_layer({"test.mixer", json}); }); };
  std::string m = err(R"({"type": "linear-attn", "feature_map": "cosine"})");
  EXPECT_NE(m.find("[linear_attn]"), std::string::npos) << m;
  EXPECT_NE(m.find("cosine"), std::string::npos) << m;
  m = err(R"({"type": "linear-attn", "feature_map": "identity", "normalize": true})");
  EXPECT_NE(m.find("positive feature map"), std::string::npos) << m;
  m = err(R"({"type": "gla", "n_heads": 3})");
  EXPECT_NE(m.find("multiple of n_heads 3"), std::string::npos) << m;
  m = err(R"({"type": "mamba2", "headdim": 24})");
  EXPECT_NE(m.find("headdim 24"), std::string::npos) << m;
  m = err(R"({"type": "hgrn2", "expand_ratio": 8, "lower_bound": 1.0})");
  EXPECT_NE(m.find("lower_bound"), std::string::npos) << m;
  m = err(R"({"type": "rwkv6", "gate_rank": 4})");
  EXPECT_NE(m.find("unknown field 'gate_rank'"), std::string::npos) << m;
}

// RetNet's decays are the paper's gamma_h = 1 - 2^(-5-h), in log space.
TEST(RetNetLayer, PerHeadDecaysFollowThePaper) {
  auto layer = make_layer({"retnet", R"({"type": "retnet", "n_heads": 4})"});
  const Tensor& g = static_cast<nn::MultiScaleRetention*>(layer.get())->log_decay();
  ASSERT_EQ(g.shape(), (Shape{4}));
  for (int h = 0; h < 4; ++h) EXPECT_NEAR(g.data<float>()[h], std::log(1.0 - std::exp2(-5.0 - h)), 1e-7);
}

// ---- presets ---------------------------------------------------------------------------------

TEST(LinearAttentionPresets, SmallPresetsMatchTransformerSmall) {
  const int64_t want = models::LanguageModel(models::resolve_preset("transformer-small")).num_parameters();
  for (const char* name : {"linear-attn-small", "retnet-small", "gla-small", "hgrn2-small", "mamba2-small", "rwkv6-small",
                           "lightning-small"}) {
    const int64_t n = models::LanguageModel(models::resolve_preset(name)).num_parameters();
    std::printf("%-20s %lld parameters (transformer-small %lld, %+.2f%%)\n", name, static_cast<long long>(n),
                static_cast<long long>(want), 100.0 * (static_cast<double>(n) / static_cast<double>(want) - 1));
    EXPECT_NEAR(static_cast<double>(n), static_cast<double>(want), 0.05 * static_cast<double>(want)) << name;
  }
}

// mamba2-115m: d_model 768, 24 layers, d_inner 1536, d_state 128, head dim 64 (24 heads), vocab 32000,
// tied embeddings: the Mamba2-130m shape of the paper with this engine's 32k vocabulary; blocks are
// norm + mixer with no MLP (FFN "none"), as in mamba_ssm's Mamba2 LM. Counted from one block
// (initialising all 115M weights is the slow tests' job): blocks are identical, plus the tied
// embedding and the final norm.
TEST(LinearAttentionPresets, Mamba2BaseIsAbout115M) {
  models::ModelConfig cfg = models::resolve_preset("mamba2-115m");
  std::mt19937_64 rng(1);
  models::Block block(cfg, models::resolve_schedule(cfg, "mamba2-115m")[0], nn::MixerSite{0, cfg.n_layers}, rng, "mamba2-115m");
  const int64_t n = cfg.n_layers * block.num_parameters() + cfg.vocab_size * cfg.d_model + cfg.d_model;
  std::printf("mamba2-115m: %lld parameters (%lld per block, mixer %lld)\n", static_cast<long long>(n),
              static_cast<long long>(block.num_parameters()), static_cast<long long>(block.mixer().num_parameters()));
  EXPECT_EQ(block.mixer().num_parameters(), 768 * (2 * 1536 + 2 * 128 + 24) + (1536 + 256) * 5 + 3 * 24 + 1536 +
                                                1536 * 768);  // in_proj, conv1d w + b, dt_bias/A_log/D, norm, out_proj
  EXPECT_EQ(block.num_parameters(), block.mixer().num_parameters() + 768);  // + the pre-norm; no FFN
  EXPECT_EQ(block.ffn(), nullptr);
  EXPECT_NEAR(static_cast<double>(n), 115e6, 0.01 * 115e6);
}

}  // namespace
}  // namespace sw
