// Lightning Attention-2 block kernels (kernels/linear/lightning_attention.h) against the f64
// reference of gated linear attention in its per-head-constant mode
// (kernels/ref/gated_linear_attention_ref.h, GlaGate::kHeadConst; its backward is itself checked
// against finite differences in gated_linear_attention_test.cpp): outputs, final state and every
// gradient for several lengths and block sizes, with h0 and dht; agreement with
// gla_forward_chunk / gla_backward_chunk; three segments with carried state == one pass; T == 0;
// strong decays stay finite.
//
// Error metric: max |kernel - ref| / max |ref| per tensor ("normalised max error"), as in
// gated_linear_attention_test.cpp. Each output element is a sum of ~K * T rounded fp32 products
// (K <= 64), so its error is expected near 6e-8 * sqrt(K * T) <= 4.8e-7 * sqrt(T); the forward
// tolerance is 2-3x that. The gradients, and dg most of all (a sum over every token of
// (i + 1)(q . dq - k . dk) whose terms partly cancel), get 3x more. Same budgets as the GLA kernels,
// which compute the same quantities; never fitted to the observed error.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/linear/gated_linear_attention.h"
#include "kernels/linear/lightning_attention.h"
#include "kernels/ref/gated_linear_attention_ref.h"
#include "testing.h"

namespace sw::kernels {
namespace {

using sw::testing::random_floats;
using sw::testing::to_f64;

struct Problem {
  LightningDims d;
  float scale = 1.0f;
  bool with_h0 = true;
  bool with_dht = true;
};

struct Inputs {
  std::vector<float> q, k, v, g, h0, dout, dht;
};

size_t n_qk(const LightningDims& d) { return d.batch * d.seq_len * d.heads * d.key_dim; }
size_t n_vo(const LightningDims& d) { return d.batch * d.seq_len * d.heads * d.value_dim; }
size_t n_state(const LightningDims& d) { return d.batch * d.heads * d.key_dim * d.value_dim; }

// Per-head log decays from strong to none: a fast head (lambda^64 ~ 1e-25), MiniMax-like slow
// ones, and g = 0 (fla's Lightning head 0 has no decay).
std::vector<float> head_decays(int64_t H) {
  const float pool[] = {-0.9f, -0.0625f, -0.0039f, 0.0f, -0.25f};
  std::vector<float> g(H);
  for (int64_t h = 0; h < H; ++h) g[h] = pool[h % 5];
  return g;
}

Inputs make_inputs(const Problem& p, uint64_t seed) {
  Inputs in;
  in.q = random_floats(n_qk(p.d), seed + 1);
  in.k = random_floats(n_qk(p.d), seed + 2);
  in.v = random_floats(n_vo(p.d), seed + 3);
  in.g = head_decays(p.d.heads);
  if (p.with_h0) in.h0 = random_floats(n_state(p.d), seed + 4);
  in.dout = random_floats(n_vo(p.d), seed + 5);
  if (p.with_dht) in.dht = random_floats(n_state(p.d), seed + 6);
  return in;
}

template <class T>
const T* ptr_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

struct Outputs {
  std::vector<float> o, ht, dq, dk, dv, dg, dh0;
};
struct RefOutputs {
  std::vector<double> o, ht, dq, dk, dv, dg, dh0;
};

RefOutputs run_ref(const Problem& p, const Inputs& in) {
  const LightningDims& d = p.d;
  RefOutputs r;
  const auto q = to_f64(in.q), k = to_f64(in.k), v = to_f64(in.v), g = to_f64(in.g),
             h0 = to_f64(in.h0), dout = to_f64(in.dout), dht = to_f64(in.dht);
  r.o.resize(n_vo(d));
  r.ht.resize(n_state(d));
  ref::gla_forward_ref(d, GlaGate::kHeadConst, p.scale, q.data(), k.data(), v.data(), g.data(),
                       nullptr, ptr_or_null(h0), r.o.data(), r.ht.data());
  r.dq.resize(n_qk(d));
  r.dk.resize(n_qk(d));
  r.dv.resize(n_vo(d));
  r.dg.resize(d.heads);
  r.dh0.resize(n_state(d));
  ref::gla_backward_ref(d, GlaGate::kHeadConst, p.scale, q.data(), k.data(), v.data(), g.data(),
                        nullptr, ptr_or_null(h0), dout.data(), ptr_or_null(dht), r.dq.data(),
                        r.dk.data(), r.dv.data(), r.dg.data(), nullptr, r.dh0.data());
  return r;
}

// NaN-filled outputs, so that an element the kernel forgets to write fails the comparison.
Outputs run_lightning(const Problem& p, const Inputs& in, int64_t block, bool backward = true,
                      bool save_states = true) {
  const LightningDims& d = p.d;
  Outputs out;
  out.o.assign(n_vo(d), NAN);
  out.ht.assign(n_state(d), NAN);
  std::vector<float> states(d.batch * d.heads * lightning_num_blocks(d.seq_len, block) *
                            d.key_dim * d.value_dim);
  lightning_forward(d, p.scale, block, in.q.data(), in.k.data(), in.v.data(), in.g.data(),
                    ptr_or_null(in.h0), out.o.data(), out.ht.data(),
                    save_states ? states.data() : nullptr);
  if (!backward) return out;
  out.dq.assign(n_qk(d), NAN);
  out.dk.assign(n_qk(d), NAN);
  out.dv.assign(n_vo(d), NAN);
  out.dg.assign(d.heads, NAN);
  out.dh0.assign(n_state(d), NAN);
  lightning_backward(d, p.scale, block, in.q.data(), in.k.data(), in.v.data(), in.g.data(),
                     ptr_or_null(in.h0), save_states ? states.data() : nullptr, in.dout.data(),
                     ptr_or_null(in.dht), out.dq.data(), out.dk.data(), out.dv.data(),
                     out.dg.data(), out.dh0.data());
  return out;
}

Outputs run_gla_chunk(const Problem& p, const Inputs& in, int64_t chunk) {
  const LightningDims& d = p.d;
  Outputs out;
  out.o.assign(n_vo(d), NAN);
  out.ht.assign(n_state(d), NAN);
  out.dq.assign(n_qk(d), NAN);
  out.dk.assign(n_qk(d), NAN);
  out.dv.assign(n_vo(d), NAN);
  out.dg.assign(d.heads, NAN);
  out.dh0.assign(n_state(d), NAN);
  gla_forward_chunk(d, GlaGate::kHeadConst, p.scale, chunk, in.q.data(), in.k.data(), in.v.data(),
                    in.g.data(), nullptr, ptr_or_null(in.h0), out.o.data(), out.ht.data(), nullptr);
  gla_backward_chunk(d, GlaGate::kHeadConst, p.scale, chunk, in.q.data(), in.k.data(),
                     in.v.data(), in.g.data(), nullptr, ptr_or_null(in.h0), nullptr,
                     in.dout.data(), ptr_or_null(in.dht), out.dq.data(), out.dk.data(),
                     out.dv.data(), out.dg.data(), nullptr, out.dh0.data());
  return out;
}

template <class A, class B>
double normalised_max_error(const std::vector<A>& a, const std::vector<B>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0, scale = 0.0;
  for (size_t i = 0; i < b.size(); ++i) scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (!std::isfinite(static_cast<double>(a[i]))) return INFINITY;
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return scale > 0.0 ? worst / scale : worst;
}

#define EXPECT_NORM_CLOSE(a, b, tol, what)                                  \
  do {                                                                      \
    const double err_ = normalised_max_error((a), (b));                    \
    EXPECT_LE(err_, (tol)) << (what) << ": normalised max error " << err_; \
  } while (0)

template <class R>
void expect_matches(const Outputs& got, const R& ref, double tf, double tb, const std::string& tag,
                    bool backward = true) {
  EXPECT_NORM_CLOSE(got.o, ref.o, tf, tag + " o");
  EXPECT_NORM_CLOSE(got.ht, ref.ht, tf, tag + " ht");
  if (!backward) return;
  EXPECT_NORM_CLOSE(got.dq, ref.dq, tb, tag + " dq");
  EXPECT_NORM_CLOSE(got.dk, ref.dk, tb, tag + " dk");
  EXPECT_NORM_CLOSE(got.dv, ref.dv, tb, tag + " dv");
  EXPECT_NORM_CLOSE(got.dg, ref.dg, tb, tag + " dg");
  EXPECT_NORM_CLOSE(got.dh0, ref.dh0, tb, tag + " dh0");
}

double tol_fwd(int64_t T) { return 1e-6 * std::sqrt(static_cast<double>(T) + 1.0); }
double tol_bwd(int64_t T) { return 3e-6 * std::sqrt(static_cast<double>(T) + 1.0); }

// ---------------------------------------------------------------------------------------------
// 1. Against the f64 reference: T in {1, 17, 64, 200}, several block sizes (partial last blocks,
// blocks larger than T, a block that is not a multiple of the 16-row stripes), with h0 and dht.

class LightningRefTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(LightningRefTest, MatchesReferenceForEveryBlockSize) {
  const int64_t T = GetParam();
  // V != K and V not a multiple of 16 exercise the column tails; H = 5 covers every decay kind.
  Problem p{{2, T, 5, 32, 36}, 1.0f};
  const Inputs in = make_inputs(p, 100 + T);
  const RefOutputs ref = run_ref(p, in);
  for (int64_t block : {1, 7, 16, 40, 64, 128}) {
    expect_matches(run_lightning(p, in, block), ref, tol_fwd(T), tol_bwd(T),
                   "T" + std::to_string(T) + " block" + std::to_string(block));
  }
  // The backward recomputing the block states itself.
  expect_matches(run_lightning(p, in, 64, true, false), ref, tol_fwd(T), tol_bwd(T),
                 "T" + std::to_string(T) + " block64 recompute");
}

INSTANTIATE_TEST_SUITE_P(Lengths, LightningRefTest, ::testing::Values(1, 17, 64, 200),
                         [](const auto& info) { return "T" + std::to_string(info.param); });

// Full-width heads (K = V = 64, the 16-column register tiles only), a scale other than 1, no h0 and
// no final-state gradient, one sequence (the block-parallel phase carries all the parallelism).
TEST(LightningRef, WideHeadsScaledNoInitialState) {
  Problem p{{1, 150, 3, 64, 64}, 0.125f, false, false};
  const Inputs in = make_inputs(p, 7);
  const RefOutputs ref = run_ref(p, in);
  for (int64_t block : {32, 64, 100})
    expect_matches(run_lightning(p, in, block), ref, tol_fwd(150), tol_bwd(150),
                   "block" + std::to_string(block));
}

// ---------------------------------------------------------------------------------------------
// 2. The same numbers as the GLA family's chunk kernel in its per-head-constant mode (fp32 vs
// fp32: both within the f64 budget of the reference, so within twice of each other).

TEST(LightningAgreement, MatchesGlaChunkHeadConst) {
  for (int64_t T : {17, 200, 333}) {
    Problem p{{2, T, 4, 32, 32}, 1.0f / std::sqrt(32.0f)};
    const Inputs in = make_inputs(p, 300 + T);
    const Outputs gla = run_gla_chunk(p, in, 32);
    expect_matches(run_lightning(p, in, 64), gla, 2 * tol_fwd(T), 2 * tol_bwd(T),
                   "T" + std::to_string(T));
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Three segments with carried state == one pass, forward and backward.

TEST(LightningSegments, ThreeSegmentsEqualOnePass) {
  const Problem full{{2, 150, 3, 16, 24}, 1.0f};
  const Inputs in = make_inputs(full, 31);
  const int64_t block = 32;
  const Outputs whole = run_lightning(full, in, block);
  const LightningDims& d = full.d;
  const int64_t lens[3] = {45, 70, 35};  // block boundaries fall differently in each segment
  const int64_t H = d.heads, K = d.key_dim, V = d.value_dim, B = d.batch;
  auto slice = [&](const std::vector<float>& x, int64_t D, int64_t t0, int64_t n) {
    std::vector<float> out(B * n * H * D);
    for (int64_t b = 0; b < B; ++b)
      std::copy(x.begin() + ((b * d.seq_len + t0) * H) * D, x.begin() + ((b * d.seq_len + t0 + n) * H) * D,
                out.begin() + b * n * H * D);
    return out;
  };
  auto unslice = [&](const std::vector<float>& x, int64_t D, int64_t t0, int64_t n, std::vector<float>* dst) {
    for (int64_t b = 0; b < B; ++b)
      std::copy(x.begin() + b * n * H * D, x.begin() + (b + 1) * n * H * D,
                dst->begin() + ((b * d.seq_len + t0) * H) * D);
  };
  std::vector<Problem> segp(3, full);
  std::vector<Inputs> segi(3);
  std::vector<float> state = in.h0, o_cat(whole.o.size());
  int64_t t0 = 0;
  for (int s = 0; s < 3; ++s) {
    segp[s].d.seq_len = lens[s];
    Inputs& si = segi[s];
    si.q = slice(in.q, K, t0, lens[s]);
    si.k = slice(in.k, K, t0, lens[s]);
    si.v = slice(in.v, V, t0, lens[s]);
    si.g = in.g;
    si.h0 = state;
    si.dout = slice(in.dout, V, t0, lens[s]);
    const Outputs so = run_lightning(segp[s], si, block, false);
    unslice(so.o, V, t0, lens[s], &o_cat);
    state = so.ht;
    t0 += lens[s];
  }
  // fp32 vs fp32 with different block boundaries: the same rounding budget as against f64.
  EXPECT_NORM_CLOSE(o_cat, whole.o, tol_fwd(150), "segmented o");
  EXPECT_NORM_CLOSE(state, whole.ht, tol_fwd(150), "segmented ht");

  std::vector<float> dstate = in.dht, dq_cat(whole.dq.size()), dk_cat(whole.dk.size()),
                     dv_cat(whole.dv.size()), dg_sum(H, 0.0f);
  t0 = d.seq_len;
  for (int s = 2; s >= 0; --s) {
    t0 -= lens[s];
    segi[s].dht = dstate;
    const Outputs so = run_lightning(segp[s], segi[s], block);
    unslice(so.dq, K, t0, lens[s], &dq_cat);
    unslice(so.dk, K, t0, lens[s], &dk_cat);
    unslice(so.dv, V, t0, lens[s], &dv_cat);
    for (int64_t h = 0; h < H; ++h) dg_sum[h] += so.dg[h];
    dstate = so.dh0;
  }
  EXPECT_NORM_CLOSE(dq_cat, whole.dq, tol_bwd(150), "segmented dq");
  EXPECT_NORM_CLOSE(dk_cat, whole.dk, tol_bwd(150), "segmented dk");
  EXPECT_NORM_CLOSE(dv_cat, whole.dv, tol_bwd(150), "segmented dv");
  EXPECT_NORM_CLOSE(dg_sum, whole.dg, tol_bwd(150), "segmented dg");
  EXPECT_NORM_CLOSE(dstate, whole.dh0, tol_bwd(150), "segmented dh0");
}

// ---------------------------------------------------------------------------------------------
// 4. Edge cases.

// T == 0: the state passes through, and so does its gradient; dg is zero.
TEST(LightningEdge, EmptySequencePassesStateThrough) {
  Problem p{{2, 0, 2, 8, 8}, 1.0f};
  const Inputs in = make_inputs(p, 3);
  const Outputs out = run_lightning(p, in, 64);
  EXPECT_EQ(out.ht, in.h0);
  EXPECT_EQ(out.dh0, in.dht);
  EXPECT_EQ(out.dg, std::vector<float>(2, 0.0f));
}

// Strong decays (lambda = e^-6: lambda^64 underflows to 0) over a long sequence stay finite and
// agree with the recurrent GLA kernel. The memory is ~1 token, so the error does not grow with T:
// the T = 100 budget.
TEST(LightningEdge, StrongDecayStaysFinite) {
  Problem p{{1, 4096, 2, 16, 16}, 1.0f};
  Inputs in = make_inputs(p, 51);
  in.g = {-6.0f, -20.0f};
  std::vector<float> o(n_vo(p.d)), ht(n_state(p.d));
  gla_forward_recurrent(p.d, GlaGate::kHeadConst, p.scale, in.q.data(), in.k.data(), in.v.data(),
                        in.g.data(), nullptr, in.h0.data(), o.data(), ht.data());
  const Outputs got = run_lightning(p, in, 64);
  EXPECT_NORM_CLOSE(got.o, o, tol_fwd(100), "o");
  EXPECT_NORM_CLOSE(got.ht, ht, tol_fwd(100), "ht");
  for (const auto* x : {&got.dq, &got.dk, &got.dv, &got.dg, &got.dh0})
    EXPECT_TRUE(std::all_of(x->begin(), x->end(), [](float f) { return std::isfinite(f); }));
}

// ---------------------------------------------------------------------------------------------
// 5. Speed against gla_forward_chunk / gla_backward_chunk (kHeadConst), not a timed test: disabled
// by default, run with --gtest_also_run_disabled_tests --gtest_filter='*Speed*'. The two kernels
// alternate within each repeat (so that load from other processes hits both alike); printed are
// the medians of each and the median of the per-repeat ratios.

struct Timing {
  double a, b, ratio;  // median seconds of a and b, median of b / a
};

Timing interleaved(const std::function<void()>& fa, const std::function<void()>& fb, int reps) {
  fa();  // warm-up (scratch growth, page faults)
  fb();
  std::vector<double> ta, tb, r;
  auto secs = [](const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int i = 0; i < reps; ++i) {
    ta.push_back(secs(fa));
    tb.push_back(secs(fb));
    r.push_back(tb.back() / ta.back());
  }
  auto med = [](std::vector<double> x) {
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  return {med(ta), med(tb), med(r)};
}

TEST(LightningSpeed, DISABLED_VersusGlaChunkHeadConst) {
  for (int64_t H : {1, 8}) {
    Problem p{{1, 2048, H, 64, 64}, 0.125f};
    const Inputs in = make_inputs(p, 9);
    std::vector<float> o(n_vo(p.d)), ht(n_state(p.d)), dq(n_qk(p.d)), dk(n_qk(p.d)),
        dv(n_vo(p.d)), dg(H), dh0(n_state(p.d));
    const int64_t C = 64;
    for (int64_t chunk : {32, 64}) {
      const Timing f = interleaved(
          [&] {
            lightning_forward(p.d, p.scale, C, in.q.data(), in.k.data(), in.v.data(), in.g.data(),
                              in.h0.data(), o.data(), ht.data(), nullptr);
          },
          [&] {
            gla_forward_chunk(p.d, GlaGate::kHeadConst, p.scale, chunk, in.q.data(), in.k.data(),
                              in.v.data(), in.g.data(), nullptr, in.h0.data(), o.data(), ht.data(),
                              nullptr);
          },
          21);
      const Timing b = interleaved(
          [&] {
            lightning_backward(p.d, p.scale, C, in.q.data(), in.k.data(), in.v.data(), in.g.data(),
                               in.h0.data(), nullptr, in.dout.data(), in.dht.data(), dq.data(),
                               dk.data(), dv.data(), dg.data(), dh0.data());
          },
          [&] {
            gla_backward_chunk(p.d, GlaGate::kHeadConst, p.scale, chunk, in.q.data(), in.k.data(),
                               in.v.data(), in.g.data(), nullptr, in.h0.data(), nullptr,
                               in.dout.data(), in.dht.data(), dq.data(), dk.data(), dv.data(),
                               dg.data(), nullptr, dh0.data());
          },
          11);
      std::printf("B=1 H=%ld T=2048 K=V=64 | fwd: lightning(C=64) %.3f ms, gla_chunk(C=%ld) %.3f ms, "
                  "ratio %.2fx | bwd (states recomputed): %.3f ms vs %.3f ms, ratio %.2fx\n",
                  static_cast<long>(H), f.a * 1e3, static_cast<long>(chunk), f.b * 1e3, f.ratio,
                  b.a * 1e3, b.b * 1e3, b.ratio);
    }
  }
}

}  // namespace
}  // namespace sw::kernels
