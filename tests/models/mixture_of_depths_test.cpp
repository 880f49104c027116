// Mixture-of-Depths (Raposo et al. 2024; models/mixture_of_depths.h): a depth-routed block.
//
// (a) The routed block (gather, attention with RoPE at the original positions, SwiGLU, scale,
//     scatter) equals a straightforward f64 loop written from the equations, at capacity 1 (every
//     token) and at capacity 1/2 with rows choosing different positions; forward 1e-5 absolute
//     (fp32 GEMMs and softmax over <= 6 terms on values of size ~1 round at ~1e-7 relative).
// (b) Gradients of that block (its input, the router weight and every inner weight, with the
//     auxiliary loss appended to the output so its gradient is checked too) against central
//     differences of the f64 loop: grad_check's defaults (atol 1e-4, rtol 1e-3), never widened.
// (c) Exactly k = ceil(capacity * T) tokens per row, the top-k by router logit, in their original
//     order; unchosen rows pass bit for bit; the chosen rows equal the block's delta on the gathered
//     tokens at their original positions, and not at the compact positions 0..k-1.
// (d) Inference (threshold r > 0): a prefill of T tokens == T single-token decode steps == prefill
//     then decode, with the same tokens routed and skipped, the same cache length (only routed
//     tokens enter it) and the same cached keys/values; and == the training form whose top-k picks the
//     same tokens (capacity |S| / T); for attention and for Gated DeltaNet. Logits 5e-5 absolute as
//     prefill_decode_test (the forms sum in different orders: tiles/chunks vs single steps).
// (e) The BCE auxiliary loss equals its formula by hand (5e-6 relative: each fp32 logit, a dot of
//     8 terms of size <= 1, rounds at ~5e-7 absolute and BCE's slope is below 1, on terms ~0.7), reaches
//     only the router weight (stop-gradient on x), and LanguageModel::loss adds it.
// (f) Config errors name the file and field; FLOPs and active parameters account for routing.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "autograd/gradcheck.h"
#include "kernels/ref/basic_ref.h"
#include "models/language_model.h"
#include "models/mixture_of_depths.h"
#include "models/model_testing.h"
#include "models/presets.h"
#include "models/registry.h"
#include "nn/attention/kv_cache.h"
#include "ops/ops.h"
#include "ops/rows_ops.h"
#include "testing.h"

namespace sw::models {
namespace {

using Vec = std::vector<double>;
using json = nlohmann::json;
namespace ref = kernels::ref;

Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  return Tensor::from_vector(testing::random_floats(static_cast<size_t>(shape_numel(s)), seed, lo, hi), s);
}

// ---- the routed block under test: attention (2 query heads, 1 kv head, head_dim 4, RoPE) + SwiGLU ----
constexpr int64_t kD = 8, kH = 2, kHkv = 1, kHd = 4, kHidden = 6;
constexpr double kRopeBase = 10000.0, kEps = 1e-6;

ModelConfig block_config(double capacity, double aux_coef, const std::string& scale = "sigmoid") {
  ModelConfig c;
  c.vocab_size = 16, c.d_model = kD, c.n_layers = 1, c.norm_eps = kEps;
  c.mixer = {{"type", "attention"}, {"n_heads", kH}, {"n_kv_heads", kHkv}, {"head_dim", kHd}};
  c.ffn = {{"type", "swiglu"}, {"hidden", kHidden}};
  c.mixture_of_depths.every = 1, c.mixture_of_depths.capacity = capacity;
  c.mixture_of_depths.aux_loss_coef = aux_coef, c.mixture_of_depths.scale = scale;
  return c;
}

std::unique_ptr<Block> make_block(const ModelConfig& c) {
  std::mt19937_64 rng(5);
  return std::make_unique<Block>(c, resolve_schedule(c, "test")[0], nn::MixerSite{0, 1}, rng, "test");
}

// Inputs {x, every parameter in visit order}, names[i] naming inputs[i + 1].
struct ModuleCheck {
  std::vector<Tensor> inputs;
  std::vector<std::string> names;
};

ModuleCheck module_inputs(nn::Module& m, const Tensor& x, uint64_t seed) {
  ModuleCheck c;
  c.inputs.push_back(x);
  m.visit_parameters([&](const std::string& name, nn::Parameter& p) {
    c.names.push_back(name);
    p.var = Variable(rand_t(p.var.data().shape(), seed++, -0.5f, 0.5f), true);
    c.inputs.push_back(p.var.data());
  });
  return c;
}

using testing::module_op;

const Vec& param(const std::vector<std::string>& names, const std::vector<Vec>& xs, const std::string& n) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == n) return xs[i + 1];
  throw Error("no parameter " + n);
}

// Per row, the k largest of s[0..T) (ties: the earlier index), ascending.
std::vector<int32_t> top_k_ref(const double* s, int64_t T, int64_t k) {
  std::vector<int32_t> idx(static_cast<size_t>(T));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The routed block in f64, straight from the definitions, one sequence at a time:
//   r_t = x_t . w_r; S = top-k of r (ascending); for the tokens of S in order, at positions S:
//   m = Wo attn(RoPE(Wq n1), RoPE(Wk n1), Wv n1) with n1 = rmsnorm(x_S), causal over S;
//   f = m + Wd (silu(Wg n2) * Wu n2) with n2 = rmsnorm(x_S + m);
//   y = x, y_S += s(r_S) f.   With append_aux: y then coef * mean_t BCE(sigmoid(z_t), [t in S]) with
//   z_t = x_sg_t . w_r, x_sg the stop-gradient copy of x: the unperturbed input, held fixed while
//   central differences move x (so d aux / dx = 0, as the layer's stop-gradient makes it).
Vec routed_block_ref(const Vec& x, const std::vector<std::string>& names, const std::vector<Vec>& xs, int64_t B,
                     int64_t T, int64_t k, const std::string& scale, double aux_coef, bool append_aux,
                     const Vec& x_sg, std::vector<std::vector<int32_t>>* chosen = nullptr) {
  const Vec& wr = param(names, xs, "router.weight");
  Vec y = x;
  double bce = 0;
  for (int64_t b = 0; b < B; ++b) {
    Vec r(static_cast<size_t>(T), 0.0), z(static_cast<size_t>(T), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < kD; ++d) {
        r[t] += x[(b * T + t) * kD + d] * wr[d];
        z[t] += x_sg[(b * T + t) * kD + d] * wr[d];
      }
    const std::vector<int32_t> S = top_k_ref(r.data(), T, k);
    if (chosen) chosen->push_back(S);
    for (int64_t t = 0; t < T; ++t) {
      const double in_s = std::count(S.begin(), S.end(), static_cast<int32_t>(t)) ? 1.0 : 0.0;
      bce += std::log1p(std::exp(-std::fabs(z[t]))) + std::max(z[t], 0.0) - in_s * z[t];
    }
    Vec xsel;
    for (int32_t t : S) xsel.insert(xsel.end(), x.begin() + (b * T + t) * kD, x.begin() + (b * T + t + 1) * kD);
    const Vec n1 = ref::rmsnorm(xsel, &param(names, xs, "norm1.weight"), k, kD, kEps);
    Vec q = ref::matmul(n1, param(names, xs, "mixer.wq.weight"), k, kH * kHd, kD, true);
    Vec kk = ref::matmul(n1, param(names, xs, "mixer.wk.weight"), k, kHkv * kHd, kD, true);
    const Vec v = ref::matmul(n1, param(names, xs, "mixer.wv.weight"), k, kHkv * kHd, kD, true);
    q = ref::rope(q, S, 1, k, kH, kHd, kHd, kRopeBase);
    kk = ref::rope(kk, S, 1, k, kHkv, kHd, kHd, kRopeBase);
    Vec o(static_cast<size_t>(k * kH * kHd), 0.0);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t h = 0; h < kH; ++h) {
        const int64_t g = h / (kH / kHkv);
        Vec p(static_cast<size_t>(i + 1));
        double mx = -INFINITY, z = 0;
        for (int64_t j = 0; j <= i; ++j) {  // causal over the chosen tokens, which keep their order
          double s = 0;
          for (int64_t d = 0; d < kHd; ++d) s += q[(i * kH + h) * kHd + d] * kk[(j * kHkv + g) * kHd + d];
          p[j] = s / std::sqrt(static_cast<double>(kHd));
          mx = std::max(mx, p[j]);
        }
        for (double& e : p) z += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t d = 0; d < kHd; ++d) o[(i * kH + h) * kHd + d] += p[j] / z * v[(j * kHkv + g) * kHd + d];
      }
    const Vec m = ref::matmul(o, param(names, xs, "mixer.wo.weight"), k, kD, kH * kHd, true);
    Vec h1 = xsel;
    for (size_t i = 0; i < h1.size(); ++i) h1[i] += m[i];
    const Vec n2 = ref::rmsnorm(h1, &param(names, xs, "norm2.weight"), k, kD, kEps);
    const Vec a = ref::swiglu(ref::matmul(n2, param(names, xs, "ffn.gate.weight"), k, kHidden, kD, true),
                              ref::matmul(n2, param(names, xs, "ffn.up.weight"), k, kHidden, kD, true));
    const Vec ff = ref::matmul(a, param(names, xs, "ffn.down.weight"), k, kD, kHidden, true);
    for (int64_t i = 0; i < k; ++i) {
      const double rs = r[S[i]], s = scale == "sigmoid" ? 1.0 / (1.0 + std::exp(-rs)) : rs;
      for (int64_t d = 0; d < kD; ++d) y[(b * T + S[i]) * kD + d] += s * (m[i * kD + d] + ff[i * kD + d]);
    }
  }
  if (append_aux) y.push_back(aux_coef * bce / static_cast<double>(B * T));
  return y;
}

struct RefCase {
  double capacity;
  std::string scale;
};

TEST(MixtureOfDepths, RoutedBlockEqualsF64LoopForwardAndGradients) {
  const int64_t B = 2, T = 6;
  for (const RefCase& rc : {RefCase{1.0, "sigmoid"}, RefCase{0.5, "sigmoid"}, RefCase{0.5, "logit"}}) {
    SCOPED_TRACE(::testing::Message() << "capacity " << rc.capacity << ", scale " << rc.scale);
    const double coef = 0.3;
    const int64_t k = depth_capacity_tokens(rc.capacity, T);
    auto block = make_block(block_config(rc.capacity, coef, rc.scale));
    ModuleCheck mc = module_inputs(*block, rand_t({B, T, kD}, 7), 20);
    OpFn op = module_op(*block, [&](const Variable& x) {
      Variable y = ops::reshape(block->forward(x, nn::MixerContext{}), {B * T * kD});
      return ops::concat({y, ops::reshape(block->router()->aux_loss(), {1})}, 0);
    });
    const Vec x0 = mc.inputs[0].to_doubles();
    RefFn refn = [&](const std::vector<Vec>& xs) {
      return routed_block_ref(xs[0], mc.names, xs, B, T, k, rc.scale, coef, true, x0);
    };
    std::vector<Variable> v;
    std::vector<Vec> xs;
    for (const Tensor& t : mc.inputs) v.emplace_back(t), xs.push_back(t.to_doubles());
    std::vector<std::vector<int32_t>> chosen;
    const Vec want = routed_block_ref(xs[0], mc.names, xs, B, T, k, rc.scale, coef, true, x0, &chosen);
    EXPECT_TRUE(testing::all_close(op(v).data().to_doubles(), want, 1e-5, 0));
    if (k < T) {
      EXPECT_NE(chosen[0], chosen[1]) << "rows should choose different positions (per-row RoPE)";
    }
    GradCheckResult r = grad_check(op, refn, mc.inputs);
    EXPECT_TRUE(r.ok) << r.report;
    // The router weight's gradient (checked above) is not trivially zero: the scale and the
    // auxiliary loss both reach it.
    const Tensor gw = block->router()->weight().grad();
    ASSERT_TRUE(gw.defined());
    double norm = 0;
    for (double g : gw.to_doubles()) norm += g * g;
    EXPECT_GT(norm, 1e-6);
  }
}

TEST(MixtureOfDepths, RowOpsEqualF64CopiesAndTheirGradients) {
  const int64_t N = 7, D = 3;
  const std::vector<int32_t> rows = {5, 0, 3};
  const Tensor idx = Tensor::from_vector(rows, {3});
  OpFn g = [&](const std::vector<Variable>& v) { return ops::gather_rows(v[0], idx); };
  RefFn gr = [&](const std::vector<Vec>& xs) {
    Vec y;
    for (int32_t r : rows) y.insert(y.end(), xs[0].begin() + r * D, xs[0].begin() + (r + 1) * D);
    return y;
  };
  EXPECT_TRUE(grad_check(g, gr, {rand_t({N, D}, 1)}).ok);
  OpFn s = [&](const std::vector<Variable>& v) { return ops::scatter_rows(v[0], idx, N); };
  RefFn sr = [&](const std::vector<Vec>& xs) {
    Vec y(N * D, 0.0);
    for (size_t m = 0; m < rows.size(); ++m)
      for (int64_t d = 0; d < D; ++d) y[rows[m] * D + d] = xs[0][m * D + d];
    return y;
  };
  EXPECT_TRUE(grad_check(s, sr, {rand_t({3, D}, 2)}).ok);
  EXPECT_TRUE(testing::all_close(ops::scatter_rows(Variable(rand_t({3, D}, 2)), idx, N).data().to_doubles(),
                                 sr({rand_t({3, D}, 2).to_doubles()}), 0, 0));
  EXPECT_THROW(ops::gather_rows(Variable(rand_t({N, D}, 1)), Tensor::from_vector(std::vector<int32_t>{1, 1}, {2})),
               Error);
  EXPECT_THROW(ops::gather_rows(Variable(rand_t({N, D}, 1)), Tensor::from_vector(std::vector<int32_t>{7}, {1})), Error);
}

TEST(MixtureOfDepths, ChoosesTopKInOrderAtOriginalPositions) {
  const int64_t B = 2, T = 12;
  auto block = make_block(block_config(0.25, 0.01));
  module_inputs(*block, Tensor::zeros({1}), 40);  // random weights of size ~0.5
  const Tensor xt = rand_t({B, T, kD}, 9);
  Variable x(xt);
  // With gradients on: the training top-k (a forward without gradients routes causally).
  const Tensor y = block->forward(x, nn::MixerContext{}).data();
  const DepthRouter& router = *block->router();
  const int64_t k = 3;  // ceil(0.25 * 12)
  ASSERT_EQ(router.last_per_row(), k);
  ASSERT_EQ(router.last_positions().size(), static_cast<size_t>(B * k));
  const Vec xd = xt.to_doubles(), w = block->router()->weight().data().to_doubles();
  const std::vector<float> yd = y.to_floats(), xf = xt.to_floats();
  std::vector<int32_t> rows, pos;
  for (int64_t b = 0; b < B; ++b) {
    Vec r(T, 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < kD; ++d) r[t] += xd[(b * T + t) * kD + d] * w[d];
    const std::vector<int32_t> want = top_k_ref(r.data(), T, k);
    const auto& all_pos = router.last_positions();
    const std::vector<int32_t> got(all_pos.begin() + b * k, all_pos.begin() + (b + 1) * k);
    EXPECT_EQ(got, want) << "row " << b;
    EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
    for (int64_t t = 0; t < T; ++t)
      if (!std::count(got.begin(), got.end(), static_cast<int32_t>(t))) {
        for (int64_t d = 0; d < kD; ++d) EXPECT_EQ(yd[(b * T + t) * kD + d], xf[(b * T + t) * kD + d]);  // bit for bit
      }
    for (int32_t t : got) rows.push_back(static_cast<int32_t>(b * T + t)), pos.push_back(t);
  }
  // The chosen rows: x + sigmoid(r) * the block's delta on the gathered tokens at their positions.
  const Tensor xs = ops::gather_rows(Variable(xt.reshape({B * T, kD})), Tensor::from_vector(rows, {B * k})).data();
  const std::vector<float> xsf = xs.to_floats();
  const std::vector<float> r = ops::linear(Variable(xs), block->router()->weight()).data().to_floats();
  auto chosen_out = [&](const Tensor& positions) {
    nn::MixerContext ctx;
    ctx.positions = positions;
    const std::vector<float> f = block->delta(Variable(xs.reshape({B, k, kD})), ctx).data().to_floats();
    std::vector<double> out(static_cast<size_t>(B * k * kD));
    for (int64_t i = 0; i < B * k; ++i)
      for (int64_t d = 0; d < kD; ++d) out[i * kD + d] = xsf[i * kD + d] + f[i * kD + d] / (1.0 + std::exp(-r[i]));
    return out;
  };
  std::vector<double> got;
  for (int32_t row : rows)
    for (int64_t d = 0; d < kD; ++d) got.push_back(yd[row * kD + d]);
  EXPECT_TRUE(testing::all_close(got, chosen_out(Tensor::from_vector(pos, {B, k})), 1e-6, 1e-6));
  // Control: at the compact positions 0..k-1 (what a block ignoring positions would compute) the
  // attention differs, so the check above does see the positions.
  std::vector<int32_t> compact;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < k; ++j) compact.push_back(static_cast<int32_t>(j));
  EXPECT_FALSE(testing::all_close(got, chosen_out(Tensor::from_vector(compact, {B, k})), 1e-4, 0));
}

// ---- inference: threshold routing ----

ModelConfig lm_config(const json& mixer) {
  ModelConfig c;
  c.vocab_size = 32, c.d_model = 16, c.n_layers = 2, c.ffn_hidden = 32, c.init_std = 0.2;
  c.mixer = mixer;
  c.mixture_of_depths.every = 2, c.mixture_of_depths.capacity = 0.5;  // block 1 is routed
  return c;
}

std::vector<float> logits_of(LanguageModel& m, const Tensor& h) {
  const int64_t n = h.dim(0) * h.dim(1);
  return m.logits(h.contiguous().reshape({n, m.config().d_model})).to_floats();
}

void expect_same_state(ModelState& a, ModelState& b, double atol) {
  ASSERT_EQ(a.position, b.position);
  for (size_t i = 0; i < a.layers.size(); ++i) {
    auto* ka = dynamic_cast<nn::KvCache*>(a.layers[i].get());
    auto* kb = dynamic_cast<nn::KvCache*>(b.layers[i].get());
    if (!ka || !kb) continue;  // recurrent states: compared through the next step's output
    ASSERT_EQ(ka->length(), kb->length()) << "layer " << i;
    EXPECT_TRUE(testing::all_close(ka->keys().to_floats(), kb->keys().to_floats(), atol, 1e-5)) << "layer " << i;
    EXPECT_TRUE(testing::all_close(ka->values().to_floats(), kb->values().to_floats(), atol, 1e-5)) << "layer " << i;
  }
}

void check_prefill_equals_decode(const json& mixer) {
  const ModelConfig cfg = lm_config(mixer);
  LanguageModel m(cfg);
  const int64_t T = 20, prefix = 7;
  const Tensor ids = testing::random_ids(1, T, cfg.vocab_size, 3);
  std::optional<NoGradGuard> ng;
  ng.emplace();
  DepthRouter& router = *m.blocks()[1]->router();
  ASSERT_EQ(m.blocks()[0]->router(), nullptr);
  // (1) one prefill of every token
  auto s_all = m.new_state(1);
  const std::vector<float> l_all = logits_of(m, m.hidden(ids, s_all.get()).data());
  const std::vector<int32_t> routed = router.last_positions();
  ASSERT_GT(routed.size(), 0u);
  ASSERT_LT(routed.size(), static_cast<size_t>(T)) << "the test wants skipped tokens";
  // (2) token by token
  auto s_step = m.new_state(1);
  std::vector<float> l_step;
  std::vector<int32_t> routed_step;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<float> l = logits_of(m, m.hidden(ids.slice(1, t, t + 1).contiguous(), s_step.get()).data());
    l_step.insert(l_step.end(), l.begin(), l.end());
    if (router.last_per_row() == 1) routed_step.push_back(static_cast<int32_t>(t));
  }
  EXPECT_EQ(routed_step, routed) << "the same tokens take the block";
  EXPECT_TRUE(testing::all_close(l_step, l_all, 5e-5, 1e-4));
  // (3) prefill then decode
  auto s_mix = m.new_state(1);
  std::vector<float> l_mix = logits_of(m, m.hidden(ids.slice(1, 0, prefix).contiguous(), s_mix.get()).data());
  for (int64_t t = prefix; t < T; ++t) {
    const std::vector<float> l = logits_of(m, m.hidden(ids.slice(1, t, t + 1).contiguous(), s_mix.get()).data());
    l_mix.insert(l_mix.end(), l.begin(), l.end());
  }
  EXPECT_TRUE(testing::all_close(l_mix, l_all, 5e-5, 1e-4));
  // Only routed tokens entered the routed block's cache; the states agree.
  if (auto* kv = dynamic_cast<nn::AttentionCache*>(s_all->layers[1].get())) {
    EXPECT_EQ(kv->length(), static_cast<int64_t>(routed.size()));
    EXPECT_EQ(dynamic_cast<nn::AttentionCache*>(s_all->layers[0].get())->length(), T);
  }
  expect_same_state(*s_all, *s_step, 1e-5);
  expect_same_state(*s_all, *s_mix, 1e-5);
  // The states continue alike (this compares recurrent states too): one more token on each.
  const Tensor next = Tensor::from_vector(std::vector<int32_t>{5}, {1, 1});
  const std::vector<float> c_all = logits_of(m, m.hidden(next, s_all.get()).data());
  EXPECT_TRUE(testing::all_close(logits_of(m, m.hidden(next, s_step.get()).data()), c_all, 5e-5, 1e-4));
  EXPECT_TRUE(testing::all_close(logits_of(m, m.hidden(next, s_mix.get()).data()), c_all, 5e-5, 1e-4));
  // The training form (gradients on) whose top-k picks the same tokens (k = |S|: exactly those with
  // r > 0) computes the same logits without a state.
  ng.reset();
  ModelConfig same_k = cfg;
  same_k.mixture_of_depths.capacity = static_cast<double>(routed.size()) / static_cast<double>(T);
  LanguageModel m2(same_k);  // same seed, same weights
  const std::vector<float> l_train = logits_of(m2, m2.hidden(ids).data());
  EXPECT_EQ(m2.blocks()[1]->router()->last_positions(), routed);
  EXPECT_TRUE(testing::all_close(l_train, l_all, 5e-5, 1e-4));
}

TEST(MixtureOfDepths, PrefillEqualsDecodeWithSkippedTokensAttention) {
  check_prefill_equals_decode({{"type", "attention"}, {"n_heads", 2}, {"n_kv_heads", 1}});
}

TEST(MixtureOfDepths, PrefillEqualsDecodeWithSkippedTokensGatedDeltaNet) {
  check_prefill_equals_decode({{"type", "gated-deltanet"}, {"n_heads", 2}, {"head_dim", 8}});
}

TEST(MixtureOfDepths, InferenceBatchRowsMustRouteAlike) {
  LanguageModel m(lm_config({{"type", "attention"}, {"n_heads", 2}}));
  NoGradGuard ng;
  const Tensor one = testing::random_ids(1, 9, 32, 4);
  auto s1 = m.new_state(1);
  const std::vector<float> l1 = logits_of(m, m.hidden(one, s1.get()).data());
  // Two identical rows route alike: allowed, and each row equals the batch-1 result.
  const std::vector<int32_t> row(one.data<int32_t>(), one.data<int32_t>() + 9);
  std::vector<int32_t> both = row;
  both.insert(both.end(), row.begin(), row.end());
  auto s2 = m.new_state(2);
  const std::vector<float> l2 = logits_of(m, m.hidden(Tensor::from_vector(both, {2, 9}), s2.get()).data());
  EXPECT_TRUE(testing::all_close(std::vector<float>(l2.begin(), l2.begin() + l1.size()), l1, 1e-5, 1e-5));
  EXPECT_TRUE(testing::all_close(std::vector<float>(l2.begin() + l1.size(), l2.end()), l1, 1e-5, 1e-5));
  // Rows that route different numbers of tokens are refused with a clear error.
  bool refused = false;
  for (uint64_t seed = 10; seed < 30 && !refused; ++seed) {
    auto s = m.new_state(2);
    try {
      m.hidden(testing::random_ids(2, 9, 32, seed), s.get());
    } catch (const Error& e) {
      refused = true;
      const std::string msg = e.what();
      EXPECT_NE(msg.find("batch rows route different numbers of tokens"), std::string::npos) << msg;
      EXPECT_NE(msg.find("batch 1"), std::string::npos) << msg;
    }
  }
  EXPECT_TRUE(refused);
}

// Without gradients (evaluation) a stateless forward routes causally too: each row equals its own
// stateful prefill even when the rows route different numbers of tokens (they then run one at a
// time), and no output depends on a later token (a top-k over the sequence would).
TEST(MixtureOfDepths, EvaluationRoutesCausallyRowByRow) {
  LanguageModel m(lm_config({{"type", "attention"}, {"n_heads", 2}}));
  NoGradGuard ng;
  const int64_t T = 9;
  DepthRouter& router = *m.blocks()[1]->router();
  bool diverged = false;
  for (uint64_t seed = 10; seed < 40 && !diverged; ++seed) {
    const Tensor ids = testing::random_ids(2, T, 32, seed);
    std::vector<float> want;
    std::vector<int64_t> counts;
    for (int64_t b = 0; b < 2; ++b) {
      auto s = m.new_state(1);
      const std::vector<float> l = logits_of(m, m.hidden(ids.slice(0, b, b + 1).contiguous(), s.get()).data());
      want.insert(want.end(), l.begin(), l.end());
      counts.push_back(router.last_per_row());
    }
    diverged = counts[0] != counts[1];
    EXPECT_TRUE(testing::all_close(logits_of(m, m.hidden(ids).data()), want, 1e-5, 1e-5)) << "seed " << seed;
    // Changing the last token leaves every earlier output as it was. Not bit for bit: whether the
    // last token is routed changes the row count of the routed block's GEMMs, and oneDNN may then
    // pick another kernel (it does on CPUs without AVX-512 bf16), which rounds differently (seen:
    // 2.4e-7). A dependence on a later token (a top-k over the sequence) would flip whole block
    // deltas of earlier tokens, changing their logits by 1e-2 and more.
    Tensor changed = ids.clone();
    changed.data<int32_t>()[T - 1] = (changed.data<int32_t>()[T - 1] + 1) % 32;
    const std::vector<float> a = logits_of(m, m.hidden(ids).data()), c = logits_of(m, m.hidden(changed).data());
    const size_t V = 32;
    EXPECT_TRUE(testing::all_close(std::vector<float>(c.begin(), c.begin() + (T - 1) * V),
                                   std::vector<float>(a.begin(), a.begin() + (T - 1) * V), 1e-5, 1e-5))
        << "seed " << seed;
  }
  EXPECT_TRUE(diverged) << "the test wants rows that route different numbers of tokens";
}

// ---- the auxiliary loss ----

TEST(MixtureOfDepths, AuxLossEqualsBceFormulaAndTrainsOnlyTheRouter) {
  const int64_t B = 2, T = 8;
  const double coef = 0.3;
  auto block = make_block(block_config(0.25, coef));
  module_inputs(*block, Tensor::zeros({1}), 60);
  const Tensor xt = rand_t({B, T, kD}, 11, -2.f, 2.f);
  Variable x(xt, true);
  block->forward(x, nn::MixerContext{});
  const Variable aux = block->router()->aux_loss();
  ASSERT_TRUE(aux.defined());
  // By hand: coef * mean over tokens of -[y log sigmoid(r) + (1 - y) log(1 - sigmoid(r))].
  const Vec xd = xt.to_doubles(), w = block->router()->weight().data().to_doubles();
  double want = 0;
  for (int64_t b = 0; b < B; ++b) {
    Vec r(T, 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < kD; ++d) r[t] += xd[(b * T + t) * kD + d] * w[d];
    const std::vector<int32_t> S = top_k_ref(r.data(), T, 2);
    for (int64_t t = 0; t < T; ++t) {
      const double p = 1.0 / (1.0 + std::exp(-r[t]));
      const bool y = std::count(S.begin(), S.end(), static_cast<int32_t>(t)) > 0;
      want -= y ? std::log(p) : std::log(1.0 - p);
    }
  }
  want *= coef / static_cast<double>(B * T);
  EXPECT_NEAR(aux.item(), want, 5e-6 * std::fabs(want));
  // Stop-gradient on x: the loss reaches the router weight and nothing else.
  aux.backward();
  EXPECT_TRUE(block->router()->weight().grad().defined());
  EXPECT_FALSE(x.grad().defined());
  block->visit_parameters([&](const std::string& name, nn::Parameter& p) {
    if (name != "router.weight") {
      EXPECT_FALSE(p.var.grad().defined()) << name;
    }
  });
  // The model's loss adds it: loss(coef) - loss(0) = the routers' aux losses.
  ModelConfig c = lm_config({{"type", "attention"}, {"n_heads", 2}});
  c.mixture_of_depths.aux_loss_coef = 0.05;
  LanguageModel with(c);
  c.mixture_of_depths.aux_loss_coef = 0;
  LanguageModel without(c);
  const Tensor ids = testing::random_ids(2, 10, 32, 6);
  const double lw = with.loss(ids, ids).item(), l0 = without.loss(ids, ids).item();
  EXPECT_EQ(without.blocks()[1]->router()->aux_loss().defined(), false);
  const double a = with.blocks()[1]->router()->aux_loss().item();
  EXPECT_GT(a, 0);
  EXPECT_NEAR(lw - l0, a, 1e-5);
  // At inference (a state) there is none.
  auto st = with.new_state(1);
  with.hidden(testing::random_ids(1, 4, 32, 1), st.get());
  EXPECT_FALSE(with.blocks()[1]->router()->aux_loss().defined());
}

// ---- composition, accounting, config ----

TEST(MixtureOfDepths, ComposesWithMoeFfnAndTrains) {
  ModelConfig c = lm_config({{"type", "gated-deltanet"}, {"n_heads", 2}, {"head_dim", 8}});
  c.ffn = {{"type", "moe"}, {"n_experts", 4}, {"top_k", 2}, {"aux_loss_coef", 0.01}};
  c.mixture_of_depths.every = 1;
  LanguageModel m(c);
  const Tensor ids = testing::random_ids(2, 16, 32, 2);
  Variable l = m.loss(ids, ids);
  ASSERT_TRUE(std::isfinite(l.item()));
  l.backward();
  for (Block* b : m.blocks()) {
    ASSERT_NE(b->router(), nullptr);
    EXPECT_EQ(b->router()->last_per_row(), 8);
    EXPECT_TRUE(b->router()->weight().grad().defined());
  }
}

TEST(MixtureOfDepths, FlopsScaleWithCapacityAndRouterParametersCount) {
  const ModelConfig mod = resolve_preset("mod-transformer-tiny");
  ASSERT_EQ(mod.mixture_of_depths.every, 2);
  ASSERT_DOUBLE_EQ(mod.mixture_of_depths.capacity, 0.125);
  ModelConfig dense_cfg = mod;
  dense_cfg.mixture_of_depths = MixtureOfDepthsConfig{};
  LanguageModel routed(mod), dense(dense_cfg);
  ASSERT_EQ(routed.blocks()[0]->router(), nullptr);
  ASSERT_NE(routed.blocks()[1]->router(), nullptr);
  const int64_t D = mod.d_model, ctx = 256;
  EXPECT_EQ(routed.active_parameters(), dense.active_parameters() + D);
  EXPECT_EQ(routed.num_parameters(), dense.num_parameters() + D);
  // Block 1: w GEMM weights and extra(context) in the dense model; capacity * (2 w + extra(k)) + 2 D routed.
  Block& b1 = *dense.blocks()[1];
  double w = b1.ffn()->gemm_weights_per_token();
  b1.mixer().visit_parameters([&](const std::string&, nn::Parameter& p) {
    if (p.var.data().ndim() == 2) w += static_cast<double>(p.var.numel());
  });
  const double cap = 0.125, full = 2 * w + b1.mixer().extra_flops_per_token(ctx);
  const double part = cap * (2 * w + b1.mixer().extra_flops_per_token(32)) + 2.0 * static_cast<double>(D);
  EXPECT_NEAR(routed.forward_flops_per_token(ctx), dense.forward_flops_per_token(ctx) - full + part, 1e-6);
  // A decode step that skips the routed block reads only its router of it.
  NoGradGuard ng;
  auto st = routed.new_state(1);
  for (int32_t id = 0; id < 40; ++id) {
    routed.hidden(Tensor::from_vector(std::vector<int32_t>{id}, {1, 1}), st.get());
    if (routed.blocks()[1]->router()->last_per_row() == 0) break;
  }
  ASSERT_EQ(routed.blocks()[1]->router()->last_per_row(), 0);
  double block_bytes = 0;
  routed.blocks()[1]->visit_parameters(
      [&](const std::string&, nn::Parameter& p) { block_bytes += static_cast<double>(p.var.data().nbytes()); });
  double all = 0;
  routed.visit_parameters(
      [&](const std::string&, nn::Parameter& p) { all += static_cast<double>(p.var.data().nbytes()); });
  EXPECT_DOUBLE_EQ(routed.last_step_weight_bytes(), all - block_bytes + 4.0 * static_cast<double>(D));
  // The config round-trips through JSON.
  const ModelConfig back = parse_model_config(model_config_to_json(mod), "roundtrip");
  EXPECT_EQ(back.mixture_of_depths.every, 2);
  EXPECT_DOUBLE_EQ(back.mixture_of_depths.capacity, 0.125);
  EXPECT_EQ(model_config_to_json(dense_cfg).contains("mixture_of_depths"), false);
}

TEST(MixtureOfDepths, ConfigErrorsNameTheField) {
  struct Bad {
    const char* text;
    std::vector<const char*> expect;
  };
  const std::string base = R"("d_model": 16, "n_layers": 2, "mixer": {"type": "attention", "n_heads": 2})";
  const std::vector<Bad> cases = {
      {R"("mixture_of_depths": {"capacity": 0, "every": 2})", {"my.json.mixture_of_depths.capacity", "(0, 1]"}},
      {R"("mixture_of_depths": {"capacity": 1.5, "every": 2})", {"my.json.mixture_of_depths.capacity", "(0, 1]"}},
      {R"("mixture_of_depths": {"every": -1})", {"my.json.mixture_of_depths.every", "[0, 4096]"}},
      {R"("mixture_of_depths": {"every": 3})", {"my.json.mixture_of_depths.every", "routes no block", "[1, 2]"}},
      {R"("mixture_of_depths": {"every": 2, "aux_loss_coef": -1})", {"my.json.mixture_of_depths.aux_loss_coef"}},
      {R"("mixture_of_depths": {"every": 2, "scale": "relu"})",
       {"my.json.mixture_of_depths.scale", "sigmoid or logit"}},
      {R"("mixture_of_depths": {"every": 2, "capacty": 0.5})",
       {"my.json.mixture_of_depths", "unknown field 'capacty'"}},
      {R"("mixture_of_depths": {"every": "2"})", {"my.json.mixture_of_depths.every", "an integer"}},
      {R"("mixture_of_depths": 2)", {"my.json.mixture_of_depths", "expected a JSON object"}},
  };
  for (const Bad& b : cases) {
    const std::string text = "{" + base + ", " + b.text + "}";
    std::string e;
    try {
      LanguageModel m(parse_model_config(json::parse(text), "my.json"));
    } catch (const Error& err) {
      e = err.what();
    }
    ASSERT_FALSE(e.empty()) << text;
    for (const char* want : b.expect) EXPECT_NE(e.find(want), std::string::npos) << "'" << want << "' not in: " << e;
  }
  // Blocks that cannot be routed, named by their field.
  const std::vector<Bad> unroutable = {
      {R"({"d_model": 16, "n_layers": 2, "mixer": {"type": "attention", "n_heads": 2, "window": 4},
           "mixture_of_depths": {"every": 1}})",
       {"my.json.mixer", "window 4"}},
      {R"({"d_model": 16, "n_layers": 2, "mixer": {"type": "attention", "n_heads": 2, "moba_block": 4},
           "mixture_of_depths": {"every": 1}})",
       {"my.json.mixer", "MoBA"}},
      {R"({"d_model": 16, "n_layers": 2, "mixer": {"type": "mla", "n_heads": 2}, "mixture_of_depths": {"every": 2}})",
       {"my.json.mixer", "'mla' cannot be"}},
      {R"({"d_model": 16, "n_layers": 2, "mixers": {"A": {"type": "attention", "n_heads": 2},
           "Y": {"type": "yoco-cross", "n_heads": 2}}, "layers": "AY", "mixture_of_depths": {"every": 2}})",
       {"my.json.mixers.Y", "cross-decoder"}},
      {R"({"d_model": 16, "n_layers": 2, "mixers": {"S": {"type": "attention", "n_heads": 2}}, "layers": "S",
           "shared": ["S"], "mixture_of_depths": {"every": 2}})",
       {"my.json.shared", "shared and depth-routed"}},
  };
  for (const Bad& b : unroutable) {
    std::string e;
    try {
      LanguageModel m(parse_model_config(json::parse(b.text), "my.json"));
    } catch (const Error& err) {
      e = err.what();
    }
    ASSERT_FALSE(e.empty()) << b.text;
    for (const char* want : b.expect) EXPECT_NE(e.find(want), std::string::npos) << "'" << want << "' not in: " << e;
  }
  // A config built in code is checked by the model too.
  ModelConfig c = lm_config({{"type", "attention"}, {"n_heads", 2}});
  c.mixture_of_depths.capacity = 0;
  EXPECT_THROW(LanguageModel m(c), Error);
}

}  // namespace
}  // namespace sw::models
