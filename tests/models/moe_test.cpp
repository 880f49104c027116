// Sparse mixture of experts (survey section 5): nn::MoeFfn, its ops and its registry entry.
//
// (a) The layer (grouped dropless dispatch) equals a straightforward f64 loop over experts written
//     from the equations, forward and every gradient (x, router, experts, shared experts, constant
//     vectors; the gates' gradients flow through the router), for every router and expert design:
//     token choice softmax/sigmoid with and without renormalisation (with the balancing bias moving
//     selections), expert choice, group-limited, shared experts, zero/copy/constant experts,
//     capacity dropping, and with the auxiliary losses appended to the output so their gradients
//     are checked too. The op itself is checked the same way on random assignments with -1 slots.
// (b) top_k = all experts with uniform gates == the dense ensemble (mean of the experts).
// (c) Capacity drops counted right on a crafted routing; expert choice never exceeds capacity.
// (d) The aux-loss-free bias moves by exactly +-gamma, changes selection, never gate values.
// (e) The Switch balance loss and the z-loss equal their formulas on fixed logits.
// (f) The short training run (bias balancing vs none) is in moe_slow_test.cpp.
// Tolerances: forward 1e-5 absolute on outputs of size ~0.1-1 (fp32 GEMMs and softmax over <= 12
// terms round at ~1e-7 relative); gradients use grad_check's defaults (atol 1e-4, rtol 1e-3: fp32
// backward vs f64 central differences), never widened.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "autograd/gradcheck.h"
#include "core/timer.h"
#include "kernels/gemm/gemm.h"
#include "kernels/ref/basic_ref.h"
#include "models/language_model.h"
#include "models/presets.h"
#include "models/registry.h"
#include "nn/moe/moe.h"
#include "ops/moe_ops.h"
#include "ops/ops.h"
#include "models/model_testing.h"
#include "testing.h"

namespace sw::nn {
namespace {

using Vec = std::vector<double>;
using json = nlohmann::json;
namespace ref = kernels::ref;

Tensor rand_t(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  return Tensor::from_vector(testing::random_floats(static_cast<size_t>(shape_numel(s)), seed, lo, hi), s);
}

// grad_check over a module: inputs {x, every parameter in visit order}; the op points the module's
// parameters at the checked Variables (as tests/models/hybrid_test.cpp does).
struct ModuleCheck {
  std::vector<Tensor> inputs;
  std::vector<std::string> names;  // names[i] is inputs[i + 1]
  std::vector<bool> wrt;           // the selection bias is not differentiable
};

ModuleCheck module_inputs(Module& m, const Tensor& x) {
  ModuleCheck c;
  c.inputs.push_back(x);
  c.wrt.push_back(true);
  m.visit_parameters([&](const std::string& name, Parameter& p) {
    c.names.push_back(name);
    c.inputs.push_back(p.var.data().contiguous());
    c.wrt.push_back(name != "selection_bias");
  });
  return c;
}

using testing::module_op;

struct Params {
  const std::vector<std::string>& names;
  const std::vector<Vec>& xs;
  const Vec* get(const std::string& n) const {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == n) return &xs[i + 1];
    return nullptr;
  }
  const Vec& operator[](const std::string& n) const {
    const Vec* v = get(n);
    if (!v) throw Error("no parameter " + n);
    return *v;
  }
};

// Random parameters (uniform [-0.5, 0.5]); the selection bias, when present, in [-bias_range, +].
void randomise(Module& m, uint64_t seed, float bias_range = 0.f) {
  m.visit_parameters([&](const std::string& name, Parameter& p) {
    if (name == "selection_bias")
      p.var.mutable_data().copy_from(rand_t(p.var.data().shape(), seed++, -bias_range, bias_range));
    else
      p.var = Variable(rand_t(p.var.data().shape(), seed++, -0.5f, 0.5f), true);
  });
}

// One SwiGLU: Wd (silu(Wg v) * Wu v) with Wg/Wu [H, D] at wg/wu + off_gu, Wd [D, H] at wd + off_d.
Vec swiglu_ref(const Vec& v, const Vec& wg, const Vec& wu, const Vec& wd, int64_t H, int64_t D, int64_t off_gu = 0,
               int64_t off_d = 0) {
  Vec g(wg.begin() + off_gu, wg.begin() + off_gu + H * D), u(wu.begin() + off_gu, wu.begin() + off_gu + H * D),
      dn(wd.begin() + off_d, wd.begin() + off_d + D * H);
  const int64_t rows = static_cast<int64_t>(v.size()) / D;
  Vec a = ref::swiglu(ref::matmul(v, g, rows, H, D, true), ref::matmul(v, u, rows, H, D, true));
  return ref::matmul(a, dn, rows, D, H, true);
}

// Indices 0..n-1 sorted by value descending, ties by lower index.
std::vector<int64_t> order_desc(const Vec& v) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  return idx;
}

// The MoE layer in f64, straight from the equations: scores, routing, gates, a loop over every
// (token, chosen expert) pair, shared experts; with append_aux the auxiliary losses follow y.
// gate_from_biased: the deliberately wrong variant for (d), gates taken from score + bias.
Vec moe_ref(const Vec& x, const Params& p, const MoeConfig& c, int64_t N, int64_t D, int64_t H, bool append_aux,
            bool gate_from_biased = false) {
  const int64_t E = c.n_experts, R = c.n_routed(), k = c.top_k;
  const Vec logits = ref::matmul(x, p["router.weight"], N, R, D, true);
  Vec s(N * R);
  for (int64_t i = 0; i < N * R; ++i) s[i] = 1 / (1 + std::exp(-logits[i]));
  if (c.score == "softmax") s = ref::softmax(logits, N, R);
  const Vec* bias = p.get("selection_bias");
  // chosen[n]: the (expert) list of token n, in slot order; dropped marks capacity drops.
  std::vector<std::vector<int64_t>> chosen(N);
  std::vector<std::vector<bool>> dropped(N);
  if (c.router == "expert_choice") {
    const double cf = c.capacity_factor > 0 ? c.capacity_factor : 1.0;
    const int64_t C = std::min<int64_t>(N, static_cast<int64_t>(std::ceil(cf * N * k / R)));
    std::vector<std::vector<bool>> pick(N, std::vector<bool>(R, false));
    for (int64_t e = 0; e < R; ++e) {
      Vec col(N);
      for (int64_t n = 0; n < N; ++n) col[n] = s[n * R + e];
      std::vector<int64_t> o = order_desc(col);
      for (int64_t i = 0; i < C; ++i) pick[o[i]][e] = true;
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t e = 0; e < R; ++e)
        if (pick[n][e]) chosen[n].push_back(e);
  } else {
    for (int64_t n = 0; n < N; ++n) {
      Vec b(R);
      for (int64_t e = 0; e < R; ++e) b[e] = s[n * R + e] + (bias ? (*bias)[e] : 0.0);
      if (c.router == "group_limited") {
        const int64_t G = c.n_groups, per = R / G;
        Vec gs(G);
        for (int64_t g = 0; g < G; ++g) {
          Vec in(b.begin() + g * per, b.begin() + (g + 1) * per);
          std::sort(in.rbegin(), in.rend());
          gs[g] = (bias && per >= 2) ? in[0] + in[1] : in[0];
        }
        std::vector<int64_t> go = order_desc(gs);
        for (int64_t i = c.topk_groups; i < G; ++i)
          for (int64_t e = go[i] * per; e < (go[i] + 1) * per; ++e) b[e] = -1e300;
      }
      std::vector<int64_t> o = order_desc(b);
      chosen[n].assign(o.begin(), o.begin() + k);
    }
  }
  std::vector<int64_t> counts(R, 0), taken(R, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e : chosen[n]) {
      ++counts[e];
      const bool over = c.router != "expert_choice" && c.capacity_factor > 0 &&
                        taken[e] >= static_cast<int64_t>(std::ceil(c.capacity_factor * N * k / R));
      dropped[n].push_back(over);
      if (!over) ++taken[e];
    }
  Vec y(N * D, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    Vec xn(x.begin() + n * D, x.begin() + (n + 1) * D);
    double z = 0;
    auto score = [&](int64_t e) { return s[n * R + e] + (gate_from_biased && bias ? (*bias)[e] : 0.0); };
    for (int64_t e : chosen[n]) z += score(e);
    const bool renorm = c.renormalize && c.router != "expert_choice";
    for (size_t j = 0; j < chosen[n].size(); ++j) {
      if (dropped[n][j]) continue;
      const int64_t e = chosen[n][j];
      const double g = renorm ? score(e) / z : score(e);
      Vec out(D, 0.0);
      if (e < E) {
        out = swiglu_ref(xn, p["w_gate"], p["w_up"], p["w_down"], H, D, e * H * D, e * D * H);
      } else if (e >= E + c.n_zero_experts && e < E + c.n_zero_experts + c.n_copy_experts) {
        out = xn;
      } else if (e >= E + c.n_zero_experts + c.n_copy_experts) {
        const int64_t ci = e - E - c.n_zero_experts - c.n_copy_experts;
        out.assign(p["const_vectors"].begin() + ci * D, p["const_vectors"].begin() + (ci + 1) * D);
      }
      for (int64_t d = 0; d < D; ++d) y[n * D + d] += g * out[d];
    }
    if (c.n_shared > 0) {
      Vec sh = swiglu_ref(xn, p["shared.gate.weight"], p["shared.up.weight"], p["shared.down.weight"],
                          c.n_shared * H, D);
      for (int64_t d = 0; d < D; ++d) y[n * D + d] += sh[d];
    }
  }
  if (append_aux) {
    double aux = 0, total = 0;
    for (int64_t e = 0; e < R; ++e) total += counts[e];
    if (c.aux_loss_coef > 0) {
      for (int64_t e = 0; e < R; ++e) {
        double P = 0;
        for (int64_t n = 0; n < N; ++n) {
          double row = 0;
          for (int64_t f = 0; f < R; ++f) row += s[n * R + f];
          P += s[n * R + e] / row / N;  // softmax rows sum to 1 already
        }
        aux += c.aux_loss_coef * R * (counts[e] / total) * P;
      }
    }
    if (c.z_loss_coef > 0) {
      double zl = 0;
      for (int64_t n = 0; n < N; ++n) {
        double se = 0;
        for (int64_t e = 0; e < R; ++e) se += std::exp(logits[n * R + e]);
        zl += std::log(se) * std::log(se) / N;
      }
      aux += c.z_loss_coef * zl;
    }
    y.push_back(aux);
  }
  return y;
}

::testing::AssertionResult forward_matches(const OpFn& op, const RefFn& refn, const std::vector<Tensor>& inputs,
                                           double atol) {
  std::vector<Variable> v;
  std::vector<Vec> xs;
  for (const Tensor& t : inputs) v.emplace_back(t), xs.push_back(t.to_doubles());
  // Training mode (gradients recorded), so the auxiliary losses exist.
  return testing::all_close(op(v).data().to_doubles(), refn(xs), atol, 0);
}

struct Case {
  const char* name;
  MoeConfig cfg;
  float bias_range = 0.f;
};

MoeConfig base(int64_t E, int64_t k) {
  MoeConfig c;
  c.n_experts = E, c.top_k = k;
  return c;
}

std::vector<Case> layer_cases() {
  std::vector<Case> v;
  {
    Case c{"softmax_renorm_aux_z", base(6, 2)};
    c.cfg.aux_loss_coef = 0.3, c.cfg.z_loss_coef = 0.2;
    v.push_back(c);
  }
  {
    Case c{"softmax_plain", base(6, 2)};
    c.cfg.renormalize = false;
    v.push_back(c);
  }
  {
    Case c{"sigmoid_renorm_bias_aux", base(6, 3), 0.15f};
    c.cfg.score = "sigmoid", c.cfg.bias_update_rate = 1e-3, c.cfg.aux_loss_coef = 0.3;
    v.push_back(c);
  }
  {
    Case c{"sigmoid_plain", base(5, 2)};
    c.cfg.score = "sigmoid", c.cfg.renormalize = false;
    v.push_back(c);
  }
  {
    Case c{"expert_choice", base(4, 2)};
    c.cfg.router = "expert_choice", c.cfg.z_loss_coef = 0.1;
    v.push_back(c);
  }
  {
    Case c{"expert_choice_cf1.5_sigmoid", base(5, 1)};
    c.cfg.router = "expert_choice", c.cfg.capacity_factor = 1.5, c.cfg.score = "sigmoid";
    v.push_back(c);
  }
  {
    Case c{"group_limited_bias", base(6, 2), 0.1f};
    c.cfg.router = "group_limited", c.cfg.n_groups = 3, c.cfg.topk_groups = 2, c.cfg.score = "sigmoid";
    c.cfg.bias_update_rate = 1e-3;
    v.push_back(c);
  }
  {
    Case c{"group_limited_nobias", base(8, 3)};
    c.cfg.router = "group_limited", c.cfg.n_groups = 4, c.cfg.topk_groups = 2;
    v.push_back(c);
  }
  {
    Case c{"shared_experts", base(4, 1)};
    c.cfg.n_shared = 2;
    v.push_back(c);
  }
  {
    Case c{"null_experts", base(4, 3)};
    c.cfg.n_zero_experts = 1, c.cfg.n_copy_experts = 1, c.cfg.n_constant_experts = 2, c.cfg.aux_loss_coef = 0.2;
    v.push_back(c);
  }
  {
    Case c{"capacity_drops", base(4, 2)};
    c.cfg.capacity_factor = 0.6, c.cfg.n_copy_experts = 1;
    v.push_back(c);
  }
  return v;
}

TEST(MoeLayer, GroupedDispatchEqualsF64LoopForEveryRouterAndDesign) {
  const int64_t B = 2, T = 6, D = 8, H = 5, N = B * T;
  for (const Case& cs : layer_cases()) {
    SCOPED_TRACE(cs.name);
    std::mt19937_64 rng(3);
    MoeFfn moe(D, H, cs.cfg, 0.02, 0.01, rng);
    randomise(moe, 20, cs.bias_range);
    ModuleCheck mc = module_inputs(moe, rand_t({B, T, D}, 7, -1.5f, 1.5f));
    const bool aux = cs.cfg.aux_loss_coef > 0 || cs.cfg.z_loss_coef > 0;
    OpFn op = module_op(moe, [&moe, aux, N, D](const Variable& x) {
      Variable y = ops::reshape(moe.forward(x), {N * D});
      return aux ? ops::concat({y, ops::reshape(moe.aux_loss(), {1})}, 0) : y;
    });
    RefFn refn = [&](const std::vector<Vec>& xs) { return moe_ref(xs[0], Params{mc.names, xs}, cs.cfg, N, D, H, aux); };
    EXPECT_TRUE(forward_matches(op, refn, mc.inputs, 1e-5));
    if (std::string(cs.name) == "capacity_drops") {
      EXPECT_GT(moe.last_routing().dropped, 0);
    }
    GradCheckOptions o;
    o.wrt = mc.wrt;
    GradCheckResult r = grad_check(op, refn, mc.inputs, o);
    EXPECT_TRUE(r.ok) << r.report;
  }
}

TEST(MoeOp, FusedEqualsLoopOverExpertsWithUnusedExperts) {
  // moe_swiglu alone: random assignments with undispatched (-1) slots and an expert no token chose;
  // gradients of x, all three weights (the unused expert's is exactly zero) and the gates.
  const int64_t N = 9, k = 2, E = 4, H = 5, D = 6;
  std::vector<int32_t> idx = {0, 2, 1, -1, 2, 0, 0, 1, -1, -1, 2, 2, 1, 0, 0, 2, 1, 1};  // expert 3 unused
  Tensor ti = Tensor::from_vector(idx, {N, k});
  std::vector<Tensor> in = {rand_t({N, D}, 1), rand_t({E, H, D}, 2, -.5f, .5f), rand_t({E, H, D}, 3, -.5f, .5f),
                            rand_t({E, D, H}, 4, -.5f, .5f), rand_t({N, k}, 5)};
  OpFn op = [&](const std::vector<Variable>& v) { return ops::moe_swiglu(v[0], v[1], v[2], v[3], ti, v[4]); };
  RefFn refn = [&](const std::vector<Vec>& xs) {
    Vec y(N * D, 0.0);
    for (int64_t e = 0; e < E; ++e)  // the plain loop: every expert over the tokens that chose it
      for (int64_t n = 0; n < N; ++n)
        for (int64_t j = 0; j < k; ++j) {
          if (idx[n * k + j] != e) continue;
          Vec xn(xs[0].begin() + n * D, xs[0].begin() + (n + 1) * D);
          Vec out = swiglu_ref(xn, xs[1], xs[2], xs[3], H, D, e * H * D, e * D * H);
          for (int64_t d = 0; d < D; ++d) y[n * D + d] += xs[4][n * k + j] * out[d];
        }
    return y;
  };
  EXPECT_TRUE(forward_matches(op, refn, in, 1e-5));
  GradCheckResult r = grad_check(op, refn, in);
  EXPECT_TRUE(r.ok) << r.report;
  std::vector<Variable> v;
  for (size_t i = 0; i < in.size(); ++i) v.emplace_back(in[i], true);
  ops::sum(op(v)).backward();
  std::vector<float> g = v[1].grad().to_floats();
  for (int64_t i = 3 * H * D; i < 4 * H * D; ++i) ASSERT_EQ(g[i], 0.f);
  EXPECT_THROW(ops::moe_swiglu(v[0], v[1], v[2], v[3], Tensor::from_vector(std::vector<int32_t>(N * k, 4), {N, k}),
                               v[4]),
               Error);  // expert id out of range
}

TEST(MoeLayer, TopKAllUniformGatesIsDenseEnsemble) {
  const int64_t B = 1, T = 7, D = 8, H = 6, E = 4, N = B * T;
  MoeConfig c = base(E, E);
  c.renormalize = false;
  std::mt19937_64 rng(4);
  MoeFfn moe(D, H, c, 0.02, 0.01, rng);
  randomise(moe, 30);
  moe.visit_parameters([](const std::string& n, Parameter& p) {
    if (n == "router.weight") p.var.mutable_data().zero();  // uniform gates 1/E
  });
  ModuleCheck mc = module_inputs(moe, rand_t({B, T, D}, 8));
  OpFn op = module_op(moe, [&](const Variable& x) { return moe.forward(x); });
  RefFn mean_of_experts = [&](const std::vector<Vec>& xs) {
    Params p{mc.names, xs};
    Vec y(N * D, 0.0);
    for (int64_t e = 0; e < E; ++e) {
      Vec o = swiglu_ref(xs[0], p["w_gate"], p["w_up"], p["w_down"], H, D, e * H * D, e * D * H);
      for (int64_t i = 0; i < N * D; ++i) y[i] += o[i] / E;
    }
    return y;
  };
  EXPECT_TRUE(forward_matches(op, mean_of_experts, mc.inputs, 1e-5));
  // Gradients against the soft ensemble sum_e softmax(router x)_e Expert_e(x) (== MoE with k = E).
  RefFn soft = [&](const std::vector<Vec>& xs) { return moe_ref(xs[0], Params{mc.names, xs}, c, N, D, H, false); };
  GradCheckResult r = grad_check(op, soft, mc.inputs);
  EXPECT_TRUE(r.ok) << r.report;
}

TEST(MoeRouter, CapacityDropsCountedOnCraftedRouting) {
  // 6 tokens, 3 experts, top-1: tokens 0, 1, 2, 4, 5 prefer expert 0, token 3 prefers expert 2.
  // capacity = ceil(1.0 * 6 * 1 / 3) = 2: expert 0 keeps tokens 0 and 1, drops 2, 4 and 5.
  std::vector<float> s = {.9f, .05f, .05f, .8f, .1f, .1f, .7f, .2f, .1f, .1f, .1f, .8f, .6f, .3f, .1f, .5f, .3f, .2f};
  Routing r = route_top_k(s.data(), nullptr, 6, 3, 1);
  EXPECT_EQ(r.selected, (std::vector<int32_t>{0, 0, 0, 2, 0, 0}));
  EXPECT_EQ(r.counts, (std::vector<int64_t>{5, 0, 1}));
  ASSERT_EQ(expert_capacity(1.0, 6, 1, 3), 2);
  apply_capacity(r, 2);
  EXPECT_EQ(r.dispatched, (std::vector<int32_t>{0, 0, -1, 2, -1, -1}));
  EXPECT_EQ(r.dropped, 3);
  EXPECT_EQ(r.counts, (std::vector<int64_t>{5, 0, 1}));  // the load counts selections, before drops
  // Top-2 with capacity 3: slot order within a token, tokens in order.
  Routing r2 = route_top_k(s.data(), nullptr, 6, 3, 2);
  apply_capacity(r2, 3);
  EXPECT_EQ(r2.selected, (std::vector<int32_t>{0, 1, 0, 1, 0, 1, 2, 0, 0, 1, 0, 1}));
  EXPECT_EQ(r2.dispatched, (std::vector<int32_t>{0, 1, 0, 1, 0, 1, 2, -1, -1, -1, -1, -1}));
  EXPECT_EQ(r2.dropped, 5);
}

TEST(MoeRouter, ExpertChoiceNeverExceedsCapacity) {
  for (double cf : {0.5, 1.0, 2.0}) {
    MoeConfig c = base(6, 2);
    c.router = "expert_choice", c.capacity_factor = cf;
    std::mt19937_64 rng(5);
    MoeFfn moe(16, 8, c, 0.5, 0.1, rng);
    NoGradGuard g;
    moe.forward(Variable(rand_t({3, 20, 16}, 9)));
    const int64_t C = expert_capacity(cf, 60, 2, 6);
    const Routing& r = moe.last_routing();
    std::vector<int64_t> per(6, 0);
    for (int32_t e : r.dispatched)
      if (e >= 0) ++per[e];
    for (int64_t e = 0; e < 6; ++e) {
      EXPECT_LE(per[e], C) << cf;
      EXPECT_EQ(per[e], std::min<int64_t>(C, 60)) << cf;  // and it fills its capacity exactly
    }
  }
}

TEST(MoeBalance, BiasMovesByGammaChangesSelectionNotGates) {
  const int64_t D = 8, H = 4, E = 5;
  MoeConfig c = base(E, 2);
  c.bias_update_rate = 0.0625;  // a power of two: b = 0 +- gamma is exact in fp32
  std::mt19937_64 rng(6);
  MoeFfn moe(D, H, c, 0.5, 0.1, rng);
  Tensor x = rand_t({2, 9, D}, 10);
  {  // evaluation forwards do not count towards the step's load
    NoGradGuard g;
    moe.forward(Variable(x));
  }
  moe.forward(Variable(x));
  const std::vector<int64_t> counts = moe.last_routing().counts;
  Routing before = moe.last_routing();
  moe.end_step();
  const std::vector<float> b = moe.selection_bias()->data().to_floats();
  double mean = 0;
  for (int64_t n : counts) mean += static_cast<double>(n) / E;
  int moved = 0;
  for (int64_t e = 0; e < E; ++e) {
    const float want = counts[e] < mean ? 0.0625f : counts[e] > mean ? -0.0625f : 0.f;
    EXPECT_EQ(b[e], want) << "expert " << e << " load " << counts[e] << " mean " << mean;
    moved += b[e] != 0.f;
  }
  EXPECT_GT(moved, 0);
  // Another end_step without a training forward changes nothing.
  moe.end_step();
  EXPECT_EQ(moe.selection_bias()->data().to_floats(), b);
  // A large bias on the least-loaded expert changes the selection...
  const int64_t least = std::min_element(counts.begin(), counts.end()) - counts.begin();
  moe.selection_bias()->mutable_data().data<float>()[least] = 5.f;
  ModuleCheck mc = module_inputs(moe, x);
  OpFn op = module_op(moe, [&](const Variable& v) { return moe.forward(v); });
  {
    std::vector<Variable> v;
    for (const Tensor& t : mc.inputs) v.emplace_back(t);
    op(v);
  }
  EXPECT_NE(moe.last_routing().selected, before.selected);
  for (int64_t n = 0; n < 18; ++n) EXPECT_EQ(moe.last_routing().selected[n * 2], least);
  // ...but the gates still come from the unbiased scores (the f64 layer with gates from the raw
  // scores matches, the one taking them from score + bias does not).
  RefFn right = [&](const std::vector<Vec>& xs) { return moe_ref(xs[0], Params{mc.names, xs}, c, 18, D, H, false); };
  RefFn wrong = [&](const std::vector<Vec>& xs) {
    return moe_ref(xs[0], Params{mc.names, xs}, c, 18, D, H, false, true);
  };
  EXPECT_TRUE(forward_matches(op, right, mc.inputs, 1e-5));
  EXPECT_FALSE(forward_matches(op, wrong, mc.inputs, 1e-3));
}

TEST(MoeBalance, AuxAndZLossEqualFormulasOnFixedLogits) {
  // Router = identity, so the logits are the input rows themselves.
  const int64_t E = 4, N = 3;
  const std::vector<float> l = {2.f, 0.5f, -1.f, 0.f, 0.1f, 0.2f, 3.f, -0.5f, 1.f, 1.f, -2.f, 0.3f};
  auto run = [&](double aux, double z, const std::string& score) {
    MoeConfig c = base(E, 2);
    c.aux_loss_coef = aux, c.z_loss_coef = z, c.score = score;
    std::mt19937_64 rng(7);
    MoeFfn moe(E, 4, c, 0.02, 0.01, rng);
    moe.visit_parameters([&](const std::string& n, Parameter& p) {
      if (n != "router.weight") return;
      float* w = p.var.mutable_data().data<float>();
      for (int64_t i = 0; i < E * E; ++i) w[i] = (i / E == i % E) ? 1.f : 0.f;
    });
    moe.forward(Variable(Tensor::from_vector(l, {1, N, E})));
    return moe.aux_loss().item();
  };
  // Closed forms. Top-2 by logit: token 0 -> {0, 1}, token 1 -> {2, 1}, token 2 -> {0, 1} (tie
  // broken by the lower index), so f = (2, 3, 1, 0) / 6.
  const double f[E] = {2 / 6., 3 / 6., 1 / 6., 0};
  double P_soft[E] = {0}, P_sig[E] = {0}, z = 0;
  for (int64_t n = 0; n < N; ++n) {
    double se = 0, ss = 0;
    for (int64_t e = 0; e < E; ++e) se += std::exp(l[n * E + e]), ss += 1 / (1 + std::exp(-l[n * E + e]));
    for (int64_t e = 0; e < E; ++e) {
      P_soft[e] += std::exp(l[n * E + e]) / se / N;
      P_sig[e] += 1 / (1 + std::exp(-l[n * E + e])) / ss / N;
    }
    z += std::log(se) * std::log(se) / N;
  }
  double aux_soft = 0, aux_sig = 0;
  for (int64_t e = 0; e < E; ++e) aux_soft += 0.01 * E * f[e] * P_soft[e], aux_sig += 0.01 * E * f[e] * P_sig[e];
  EXPECT_NEAR(run(0.01, 0, "softmax"), aux_soft, 1e-6 * aux_soft);  // fp32 sums of 12 terms
  EXPECT_NEAR(run(0.01, 0, "sigmoid"), aux_sig, 1e-6 * aux_sig);
  EXPECT_NEAR(run(0, 1e-3, "softmax"), 1e-3 * z, 1e-6 * 1e-3 * z);
  EXPECT_NEAR(run(0.01, 1e-3, "softmax"), aux_soft + 1e-3 * z, 1e-6 * (aux_soft + 1e-3 * z));
  // Uniform routing gives exactly the coefficient (Switch's normalisation).
  MoeConfig c = base(E, 1);
  c.aux_loss_coef = 0.01;
  std::mt19937_64 rng(8);
  MoeFfn moe(E, 4, c, 0.02, 0.01, rng);
  moe.visit_parameters([&](const std::string& n, Parameter& p) {
    if (n != "router.weight") return;
    float* w = p.var.mutable_data().data<float>();
    for (int64_t i = 0; i < E * E; ++i) w[i] = (i / E == i % E) ? 1.f : 0.f;
  });
  std::vector<float> onehot(E * E, 0.f);  // token e prefers expert e; P_e = 1/E by symmetry
  for (int64_t e = 0; e < E; ++e) onehot[e * E + e] = 1.f;
  moe.forward(Variable(Tensor::from_vector(onehot, {1, E, E})));
  EXPECT_NEAR(moe.aux_loss().item(), 0.01, 1e-8);
  // No aux losses without gradients (evaluation) or without coefficients.
  NoGradGuard g;
  moe.forward(Variable(Tensor::from_vector(onehot, {1, E, E})));
  EXPECT_FALSE(moe.aux_loss().defined());
}

TEST(MoeDecode, OneTokenReadsOnlyTheSelectedExperts) {
  // B * T = 1: poison every expert the token did not choose with NaN; the output stays finite and
  // equal to the unpoisoned one, so no unselected expert's weights were read (no O(E H D) work).
  const int64_t D = 16, H = 8, E = 16;
  MoeConfig c = base(E, 2);
  c.n_shared = 1;
  std::mt19937_64 rng(9);
  MoeFfn moe(D, H, c, 0.3, 0.1, rng);
  NoGradGuard g;
  Variable x(rand_t({1, 1, D}, 3));
  const std::vector<float> clean = moe.forward(x).data().to_floats();
  std::vector<int32_t> sel = moe.last_routing().selected;
  moe.visit_parameters([&](const std::string& n, Parameter& p) {
    if (n != "w_gate" && n != "w_up" && n != "w_down") return;
    float* w = p.var.mutable_data().data<float>();
    for (int64_t e = 0; e < E; ++e)
      if (e != sel[0] && e != sel[1])
        for (int64_t i = 0; i < H * D; ++i) w[e * H * D + i] = NAN;
  });
  EXPECT_EQ(moe.forward(x).data().to_floats(), clean);
}

int64_t active_params(models::LanguageModel& m) { return m.active_parameters(); }

TEST(MoeDecode, Bf16ExpertsAndOnlyTheChosenExpertsBytesCount) {
  // to_bf16_weights narrows the stacked expert weights [E, H, D] like any GEMM weight; one token
  // then reads (and is counted for) the router, its top_k experts and the shared expert only.
  const int64_t D = 16, H = 8, E = 8, K = 2;
  MoeConfig c = base(E, K);
  c.n_shared = 1;
  std::mt19937_64 rng(4);
  MoeFfn moe(D, H, c, 0.3, 0.1, rng);
  NoGradGuard g;
  Variable x(rand_t({1, 1, D}, 5));
  const std::vector<float> f32 = moe.forward(x).data().to_floats();
  moe.to_bf16_weights();
  moe.visit_parameters([&](const std::string& n, Parameter& p) {
    if (n == "w_gate" || n == "w_up" || n == "w_down") {
      EXPECT_EQ(p.var.data().dtype(), DType::bf16) << n;
    }
  });
  const std::vector<float> b16 = moe.forward(x).data().to_floats();
  for (size_t i = 0; i < f32.size(); ++i) EXPECT_NEAR(b16[i], f32[i], 2e-2 * std::fabs(f32[i]) + 1e-3) << i;
  double total = 0;
  moe.visit_parameters([&](const std::string&, Parameter& p) { total += static_cast<double>(p.var.data().nbytes()); });
  const double per_expert_bf16 = 3.0 * H * D * 2;
  EXPECT_DOUBLE_EQ(moe.last_weight_bytes(), total - (E - K) * per_expert_bf16);
}

TEST(MoePresets, SmallPresetsMatchTransformerSmallActiveParameters) {
  const int64_t dense = models::LanguageModel(models::resolve_preset("transformer-small")).num_parameters();
  for (const char* name : {"moe-small", "moe-fine-small", "moe-gdn-small"}) {
    models::LanguageModel m(models::resolve_preset(name));
    const int64_t act = active_params(m);
    std::printf("%-16s total %8lld active %8lld (transformer-small %lld: %+.2f%%)\n", name,
                static_cast<long long>(m.num_parameters()), static_cast<long long>(act),
                static_cast<long long>(dense), 100.0 * (act - dense) / dense);
    EXPECT_LT(std::fabs(static_cast<double>(act - dense)) / dense, 0.05) << name;
  }
  {  // (moe-100m: 363.2M total, 100.0M active; not built here, it takes seconds and 1.5 GB)
    const char* name = "moe-tiny";
    models::LanguageModel m(models::resolve_preset(name));
    std::printf("%-16s total %8lld active %8lld\n", name, static_cast<long long>(m.num_parameters()),
                static_cast<long long>(active_params(m)));
  }
}

TEST(MoeRegistry, BadFieldsNameTheFieldAndRange) {
  struct Bad {
    const char* ffn;
    std::vector<const char*> expect;
  };
  const std::vector<Bad> cases = {
      {R"({"type": "moe", "n_experts": 0})", {"my.json.ffn.n_experts", "1..4096"}},
      {R"({"type": "moe", "n_experts": 4, "top_k": 5})", {"my.json.ffn.top_k", "1..4"}},
      {R"({"type": "moe", "n_experts": 4, "top_k": 6, "n_copy_experts": 1})", {"my.json.ffn.top_k", "1..5"}},
      {R"({"type": "moe", "score": "relu"})", {"my.json.ffn.score", "softmax or sigmoid"}},
      {R"({"type": "moe", "router": "hash"})", {"my.json.ffn.router", "token_choice, expert_choice"}},
      {R"({"type": "moe", "router": "group_limited", "n_groups": 3})", {"my.json.ffn.n_groups", "divisor"}},
      {R"({"type": "moe", "router": "group_limited", "n_groups": 4, "topk_groups": 5})",
       {"my.json.ffn.topk_groups", "1..4"}},
      {R"({"type": "moe", "n_experts": 8, "top_k": 4, "router": "group_limited", "n_groups": 4, "topk_groups": 1})",
       {"my.json.ffn.top_k", "at most"}},
      {R"({"type": "moe", "n_groups": 2})", {"my.json.ffn.n_groups", "only with router group_limited"}},
      {R"({"type": "moe", "capacity_factor": -1})", {"my.json.ffn.capacity_factor", "0..64"}},
      {R"({"type": "moe", "aux_loss_coef": -0.1})", {"my.json.ffn.aux_loss_coef"}},
      {R"({"type": "moe", "z_loss_coef": 1e9})", {"my.json.ffn.z_loss_coef"}},
      {R"({"type": "moe", "bias_update_rate": 2})", {"my.json.ffn.bias_update_rate", "0..1"}},
      {R"({"type": "moe", "router": "expert_choice", "bias_update_rate": 0.01})", {"my.json.ffn.bias_update_rate"}},
      {R"({"type": "moe", "n_zero_experts": -1})", {"my.json.ffn.n_zero_experts"}},
      {R"({"type": "moe", "n_shared": 100})", {"my.json.ffn.n_shared", "0..64"}},
      {R"({"type": "moe", "expert_hidden": -3})", {"my.json.ffn.expert_hidden"}},
      {R"({"type": "moe", "n_expert": 4})", {"my.json.ffn", "unknown field 'n_expert'"}},
      {R"({"type": "moe", "top_k": "two"})", {"my.json.ffn.top_k", "an integer"}},
  };
  for (const Bad& b : cases) {
    const std::string text = std::string(R"({"d_model": 16, "n_layers": 1, "ffn": )") + b.ffn + "}";
    std::string e;
    try {
      models::LanguageModel m(models::parse_model_config(json::parse(text), "my.json"));
    } catch (const Error& err) {
      e = err.what();
    }
    ASSERT_FALSE(e.empty()) << text;
    for (const char* want : b.expect) EXPECT_NE(e.find(want), std::string::npos) << "'" << want << "' not in: " << e;
  }
  // A good one builds, and its loss carries the auxiliary losses.
  models::LanguageModel m(models::resolve_preset("moe-tiny"));
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 4, 5, 6}, {1, 6});
  const double with_aux = m.loss(ids, ids).item();
  double aux = 0;
  for (auto* b : m.blocks()) aux += b->ffn()->aux_loss().item();
  EXPECT_GT(aux, 0);
  EXPECT_GT(with_aux, aux);
  EXPECT_EQ(m.expert_loads().size(), 2u);
}

// Training throughput (forward + backward) of the MoE layer vs a dense SwiGLU with the same active
// parameters (top_k * expert_hidden = dense hidden). Run with --gtest_also_run_disabled_tests.
TEST(MoeBench, DISABLED_TrainingThroughputVsDense) {
  struct Shape3 {
    int64_t E, k;
  };
  for (int64_t D : {128, 256})
    for (int64_t N : {2048, 4096})
      for (Shape3 s : {Shape3{16, 2}, Shape3{64, 8}}) {
        const int64_t hidden = 4 * D, H = hidden / s.k;
        std::mt19937_64 rng(1);
        SwiGluMlp dense(D, hidden, 0.02, 0.01, rng);
        MoeConfig c = base(s.E, s.k);
        MoeFfn moe(D, H, c, 0.02, 0.01, rng);
        Variable x(rand_t({1, N, D}, 2), true);
        auto time = [&](Ffn& f) {
          std::vector<double> t;
          for (int rep = 0; rep < 9; ++rep) {
            const double t0 = now_seconds();
            ops::sum(f.forward(x)).backward();
            t.push_back(now_seconds() - t0);
            f.zero_grad();
            x.zero_grad();
          }
          std::sort(t.begin(), t.end());
          return t[t.size() / 2];  // median of 9 (first ones warm the GEMM primitive cache)
        };
        const double td = time(dense), tm = time(moe);
        std::printf("D %3lld N %4lld E %2lld k %lld H %4lld: dense %.2f ms, moe %.2f ms, moe/dense throughput %.0f%%\n",
                    static_cast<long long>(D), static_cast<long long>(N), static_cast<long long>(s.E),
                    static_cast<long long>(s.k), static_cast<long long>(H), td * 1e3, tm * 1e3, 100 * td / tm);
      }
}

}  // namespace
}  // namespace sw::nn
