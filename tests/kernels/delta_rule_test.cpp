// Delta-rule family: DeltaNet / Gated DeltaNet (recurrent, step, chunkwise) and RWKV-7 DPLR.
//
// Oracles: the f64 recurrences and BPTT in kernels/ref/delta_rule_ref.h, themselves checked by
// central finite differences. Every form must agree with them on outputs, final state and every
// gradient (dq, dk, dv, dbeta, dg, dh0; dr, dw, dk, dv, da, db, dh0), with h0 and dht nonzero.
//
// Tolerances. An fp32 kernel differs from the f64 reference by rounding that accumulates over the
// recurrence: a random walk of ~T_eff roundings of relative size eps = 2^-24 = 6e-8, where T_eff <= T
// is the memory of the state, times the length of the sums inside one step (K, V, C ~ 10..100). We
// compare with atol = tol * max|ref| and rtol = tol per tensor, tol = 5e-7 sqrt(T) + 2e-6, i.e.
// ~8 sqrt(T) eps plus ~30 eps for the in-step sums. Measured errors are 1e-7..3e-7 of max|ref| for
// T <= 1000 (10x to 30x below), while a wrong term (a missing decay factor, a sign, an off-by-one at
// a chunk boundary, fp32 instead of f64 gate cumsums) shows up at 1e-5 or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/linear/delta_rule.h"
#include "kernels/linear/dplr_delta_rule.h"
#include "kernels/ref/delta_rule_ref.h"
#include "testing.h"

namespace sw {
namespace {

using sw::testing::all_close;
using sw::testing::random_floats;
using sw::testing::to_f64;

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Closeness of an fp32 result to an f64 reference, scaled by the reference's magnitude.
template <class A>
::testing::AssertionResult close_to_ref(const std::vector<A>& got, const std::vector<double>& ref, double tol) {
  return all_close(got, ref, tol * std::max(1e-3, max_abs(ref)), tol);
}

double tol_for(int T) { return 5e-7 * std::sqrt(double(T)) + 2e-6; }

// ---------------------------------------------------------------------------------------------------
// Gated DeltaNet inputs. Keys L2-normalised (as the layer does), beta in (0, 1) (or (0, 2) with
// negative eigenvalues), g = logsigmoid(x) / normaliser as in fla's tests (normaliser 1: mild decay,
// 0.01: very strong).
struct DeltaInputs {
  int B, T, H, K, V;
  bool gated;
  std::vector<float> q, k, v, beta, g, h0, d_o, dht;
};

DeltaInputs make_delta_inputs(int B, int T, int H, int K, int V, bool gated, uint64_t seed,
                              float gate_normaliser = 1.f, float beta_max = 1.f) {
  DeltaInputs in{B, T, H, K, V, gated, {}, {}, {}, {}, {}, {}, {}, {}};
  const size_t BTH = size_t(B) * T * H;
  in.q = random_floats(BTH * K, seed + 1);
  in.k = random_floats(BTH * K, seed + 2);
  for (size_t r = 0; r < BTH; ++r) {
    float n = 0;
    for (int c = 0; c < K; ++c) n += in.k[r * K + c] * in.k[r * K + c];
    n = 1.f / std::sqrt(n + 1e-6f);
    for (int c = 0; c < K; ++c) in.k[r * K + c] *= n;
  }
  in.v = random_floats(BTH * V, seed + 3);
  in.beta = random_floats(BTH, seed + 4, 0.05f * beta_max, 0.95f * beta_max);
  if (gated) {
    in.g = random_floats(BTH, seed + 5, -3.f, 3.f);
    for (auto& x : in.g) x = -std::log1p(std::exp(-x)) / gate_normaliser;  // logsigmoid
  }
  in.h0 = random_floats(size_t(B) * H * K * V, seed + 6);
  in.d_o = random_floats(BTH * V, seed + 7);
  in.dht = random_floats(size_t(B) * H * K * V, seed + 8);
  return in;
}

struct DeltaOut {
  std::vector<float> o, ht;
};
struct DeltaGrads {
  std::vector<float> dq, dk, dv, dbeta, dg, dh0;
};
struct DeltaRef {
  std::vector<double> o, ht, dq, dk, dv, dbeta, dg, dh0;
};

DeltaRef run_ref(const DeltaInputs& in, double scale) {
  const size_t BTH = size_t(in.B) * in.T * in.H, KV = size_t(in.B) * in.H * in.K * in.V;
  DeltaRef r;
  r.o.resize(BTH * in.V);
  r.ht.resize(KV);
  r.dq.resize(BTH * in.K);
  r.dk.resize(BTH * in.K);
  r.dv.resize(BTH * in.V);
  r.dbeta.resize(BTH);
  r.dg.resize(BTH);
  r.dh0.resize(KV);
  auto q = to_f64(in.q), k = to_f64(in.k), v = to_f64(in.v), beta = to_f64(in.beta), g = to_f64(in.g),
       h0 = to_f64(in.h0), d_o = to_f64(in.d_o), dht = to_f64(in.dht);
  const double* gp = in.gated ? g.data() : nullptr;
  kernels::ref::delta_rule_fwd(q.data(), k.data(), v.data(), beta.data(), gp, h0.data(), r.o.data(), r.ht.data(),
                               in.B, in.T, in.H, in.K, in.V, scale);
  kernels::ref::delta_rule_bwd(q.data(), k.data(), v.data(), beta.data(), gp, h0.data(), d_o.data(), dht.data(),
                               r.dq.data(), r.dk.data(), r.dv.data(), r.dbeta.data(), r.dg.data(), r.dh0.data(),
                               in.B, in.T, in.H, in.K, in.V, scale);
  return r;
}

enum class Form { kRecurrent, kChunk };

DeltaOut run_fwd(const DeltaInputs& in, float scale, Form form, int C) {
  DeltaOut out;
  out.o.assign(size_t(in.B) * in.T * in.H * in.V, NAN);
  out.ht.assign(size_t(in.B) * in.H * in.K * in.V, NAN);
  const float* g = in.gated ? in.g.data() : nullptr;
  if (form == Form::kRecurrent)
    kernels::delta_rule_recurrent_fwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), g, in.h0.data(),
                                      out.o.data(), out.ht.data(), in.B, in.T, in.H, in.K, in.V, scale);
  else
    kernels::delta_rule_chunk_fwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), g, in.h0.data(),
                                  out.o.data(), out.ht.data(), in.B, in.T, in.H, in.K, in.V, scale, C);
  return out;
}

DeltaGrads run_bwd(const DeltaInputs& in, float scale, Form form, int C) {
  const size_t BTH = size_t(in.B) * in.T * in.H, KV = size_t(in.B) * in.H * in.K * in.V;
  // NaN-filled outputs: any element the kernel forgets to write fails the comparison.
  DeltaGrads gr{std::vector<float>(BTH * in.K, NAN), std::vector<float>(BTH * in.K, NAN),
                std::vector<float>(BTH * in.V, NAN), std::vector<float>(BTH, NAN),
                std::vector<float>(BTH, NAN),        std::vector<float>(KV, NAN)};
  const float* g = in.gated ? in.g.data() : nullptr;
  if (form == Form::kRecurrent)
    kernels::delta_rule_recurrent_bwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), g, in.h0.data(),
                                      in.d_o.data(), in.dht.data(), gr.dq.data(), gr.dk.data(), gr.dv.data(),
                                      gr.dbeta.data(), gr.dg.data(), gr.dh0.data(), in.B, in.T, in.H, in.K, in.V,
                                      scale);
  else
    kernels::delta_rule_chunk_bwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), g, in.h0.data(),
                                  in.d_o.data(), in.dht.data(), gr.dq.data(), gr.dk.data(), gr.dv.data(),
                                  gr.dbeta.data(), gr.dg.data(), gr.dh0.data(), in.B, in.T, in.H, in.K, in.V, scale,
                                  C);
  return gr;
}

void expect_matches_ref(const DeltaOut& out, const DeltaGrads& gr, const DeltaRef& ref, double tol, bool gated,
                        const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(close_to_ref(out.o, ref.o, tol)) << "o";
  EXPECT_TRUE(close_to_ref(out.ht, ref.ht, tol)) << "ht";
  EXPECT_TRUE(close_to_ref(gr.dq, ref.dq, tol)) << "dq";
  EXPECT_TRUE(close_to_ref(gr.dk, ref.dk, tol)) << "dk";
  EXPECT_TRUE(close_to_ref(gr.dv, ref.dv, tol)) << "dv";
  EXPECT_TRUE(close_to_ref(gr.dbeta, ref.dbeta, tol)) << "dbeta";
  EXPECT_TRUE(close_to_ref(gr.dh0, ref.dh0, tol)) << "dh0";
  if (gated) {
    EXPECT_TRUE(close_to_ref(gr.dg, ref.dg, tol)) << "dg";
  } else {
    for (float x : gr.dg) ASSERT_EQ(x, 0.f) << "dg without a gate must be written as zeros";
  }
}

// ---------------------------------------------------------------------------------------------------
// The reference backward against central finite differences of the reference forward (f64).
// Loss L = sum(o * do) + sum(ht * dht). Step 1e-5: truncation ~1e-10 * |f'''|, rounding ~1e-16 / 1e-5
// ~1e-11, so 1e-7 absolute (values O(1)) is ~1000x above the noise and far below any real error.
double delta_loss(const DeltaInputs& in, const std::vector<double>& q, const std::vector<double>& k,
                  const std::vector<double>& v, const std::vector<double>& beta, const std::vector<double>& g,
                  const std::vector<double>& h0, double scale) {
  std::vector<double> o(size_t(in.B) * in.T * in.H * in.V), ht(size_t(in.B) * in.H * in.K * in.V);
  kernels::ref::delta_rule_fwd(q.data(), k.data(), v.data(), beta.data(), in.gated ? g.data() : nullptr, h0.data(),
                               o.data(), ht.data(), in.B, in.T, in.H, in.K, in.V, scale);
  double l = 0;
  for (size_t i = 0; i < o.size(); ++i) l += o[i] * in.d_o[i];
  for (size_t i = 0; i < ht.size(); ++i) l += ht[i] * in.dht[i];
  return l;
}

TEST(DeltaRuleRef, BackwardMatchesFiniteDifferences) {
  for (bool gated : {false, true}) {
    SCOPED_TRACE(gated ? "gated" : "ungated");
    const DeltaInputs in = make_delta_inputs(2, 5, 2, 3, 4, gated, 11, 0.5f, 2.f);
    const double scale = 0.7;
    const DeltaRef ref = run_ref(in, scale);
    std::vector<std::vector<double>> x = {to_f64(in.q),    to_f64(in.k), to_f64(in.v),
                                          to_f64(in.beta), to_f64(in.g), to_f64(in.h0)};
    const std::vector<const std::vector<double>*> analytic = {&ref.dq,    &ref.dk, &ref.dv,
                                                              &ref.dbeta, &ref.dg, &ref.dh0};
    const char* names[] = {"q", "k", "v", "beta", "g", "h0"};
    for (int which = 0; which < 6; ++which) {
      if (which == 4 && !gated) continue;
      std::vector<double> fd(x[which].size());
      for (size_t i = 0; i < fd.size(); ++i) {
        const double keep = x[which][i], h = 1e-5;
        x[which][i] = keep + h;
        const double lp = delta_loss(in, x[0], x[1], x[2], x[3], x[4], x[5], scale);
        x[which][i] = keep - h;
        const double lm = delta_loss(in, x[0], x[1], x[2], x[3], x[4], x[5], scale);
        x[which][i] = keep;
        fd[i] = (lp - lm) / (2 * h);
      }
      EXPECT_TRUE(all_close(*analytic[which], fd, 1e-7, 1e-7)) << "d" << names[which];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
TEST(DeltaRule, RecurrentMatchesReference) {
  for (bool gated : {false, true})
    for (int T : {1, 17, 64, 200, 1000}) {
      const DeltaInputs in = make_delta_inputs(2, T, 2, 20, 36, gated, 100 + T);
      const float scale = 1.f / std::sqrt(20.f);
      const DeltaRef ref = run_ref(in, scale);
      expect_matches_ref(run_fwd(in, scale, Form::kRecurrent, 0), run_bwd(in, scale, Form::kRecurrent, 0), ref,
                         tol_for(T), gated, "recurrent T=" + std::to_string(T) + (gated ? " gated" : ""));
    }
}

TEST(DeltaRule, ChunkMatchesReference) {
  for (bool gated : {false, true})
    for (int T : {1, 17, 64, 200, 1000})
      for (int C : {16, 64}) {
        const DeltaInputs in = make_delta_inputs(2, T, 2, 20, 36, gated, 200 + T);
        const float scale = 1.f / std::sqrt(20.f);
        const DeltaRef ref = run_ref(in, scale);
        expect_matches_ref(run_fwd(in, scale, Form::kChunk, C), run_bwd(in, scale, Form::kChunk, C), ref,
                           tol_for(T), gated,
                           "chunk C=" + std::to_string(C) + " T=" + std::to_string(T) + (gated ? " gated" : ""));
      }
}

// Head dims 64 exercise the full register tiles of the matrix products; odd chunk sizes and beta in
// (0, 2) (negative eigenvalues) the general paths; strong gates the decay bookkeeping.
TEST(DeltaRule, ChunkMatchesReferenceWideHeadsAndOddChunks) {
  struct Case {
    int T, K, V, C;
    float normaliser, beta_max;
  };
  for (const Case& cs : {Case{130, 64, 64, 64, 1.f, 1.f}, Case{77, 64, 48, 32, 0.1f, 2.f},
                         Case{90, 16, 80, 7, 1.f, 2.f}, Case{100, 32, 32, 128, 10.f, 1.f},
                         Case{45, 8, 8, 1, 1.f, 1.f}}) {
    const DeltaInputs in = make_delta_inputs(1, cs.T, 3, cs.K, cs.V, true, 300 + cs.C, cs.normaliser, cs.beta_max);
    const float scale = 1.f / std::sqrt(float(cs.K));
    const DeltaRef ref = run_ref(in, scale);
    const std::string what = "T=" + std::to_string(cs.T) + " K=" + std::to_string(cs.K) +
                             " V=" + std::to_string(cs.V) + " C=" + std::to_string(cs.C);
    expect_matches_ref(run_fwd(in, scale, Form::kChunk, cs.C), run_bwd(in, scale, Form::kChunk, cs.C), ref,
                       tol_for(cs.T), true, "chunk " + what);
    expect_matches_ref(run_fwd(in, scale, Form::kRecurrent, 0), run_bwd(in, scale, Form::kRecurrent, 0), ref,
                       tol_for(cs.T), true, "recurrent " + what);
  }
}

TEST(DeltaRule, NullInitialStateAndNoFinalGradient) {
  // h0 == nullptr means zeros, dht == nullptr means no gradient from the final state.
  DeltaInputs in = make_delta_inputs(1, 50, 2, 16, 16, true, 7);
  const float scale = 0.25f;
  std::fill(in.h0.begin(), in.h0.end(), 0.f);
  std::fill(in.dht.begin(), in.dht.end(), 0.f);
  const DeltaRef ref = run_ref(in, scale);
  const size_t BTH = size_t(in.B) * in.T * in.H;
  for (Form form : {Form::kRecurrent, Form::kChunk}) {
    std::vector<float> o(BTH * in.V), dq(BTH * in.K), dk(BTH * in.K), dv(BTH * in.V), dbeta(BTH), dg(BTH);
    if (form == Form::kRecurrent) {
      kernels::delta_rule_recurrent_fwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), in.g.data(), nullptr,
                                        o.data(), nullptr, in.B, in.T, in.H, in.K, in.V, scale);
      kernels::delta_rule_recurrent_bwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), in.g.data(), nullptr,
                                        in.d_o.data(), nullptr, dq.data(), dk.data(), dv.data(), dbeta.data(),
                                        dg.data(), nullptr, in.B, in.T, in.H, in.K, in.V, scale);
    } else {
      kernels::delta_rule_chunk_fwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), in.g.data(), nullptr,
                                    o.data(), nullptr, in.B, in.T, in.H, in.K, in.V, scale, 16);
      kernels::delta_rule_chunk_bwd(in.q.data(), in.k.data(), in.v.data(), in.beta.data(), in.g.data(), nullptr,
                                    in.d_o.data(), nullptr, dq.data(), dk.data(), dv.data(), dbeta.data(), dg.data(),
                                    nullptr, in.B, in.T, in.H, in.K, in.V, scale, 16);
    }
    const double tol = tol_for(in.T);
    EXPECT_TRUE(close_to_ref(o, ref.o, tol));
    EXPECT_TRUE(close_to_ref(dq, ref.dq, tol));
    EXPECT_TRUE(close_to_ref(dk, ref.dk, tol));
    EXPECT_TRUE(close_to_ref(dv, ref.dv, tol));
    EXPECT_TRUE(close_to_ref(dbeta, ref.dbeta, tol));
    EXPECT_TRUE(close_to_ref(dg, ref.dg, tol));
  }
}

// Decode: the step function applied token by token equals the recurrent forward (same arithmetic,
// so bit-for-bit up to the order of the row loop, which is the same; compared at 1e-6).
TEST(DeltaRule, StepMatchesRecurrent) {
  const int B = 2, T = 40, H = 3, K = 24, V = 40;
  const DeltaInputs in = make_delta_inputs(B, T, H, K, V, true, 21);
  const float scale = 0.2f;
  const DeltaOut full = run_fwd(in, scale, Form::kRecurrent, 0);
  std::vector<float> state = in.h0, o(size_t(B) * T * H * V);
  std::vector<float> qs(size_t(B) * H * K), ks(qs.size()), vs(size_t(B) * H * V), bs(size_t(B) * H), gs(bs.size()),
      os(vs.size());
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h) {
        const size_t src = (size_t(b) * T + t) * H + h, dst = size_t(b) * H + h;
        std::copy_n(&in.q[src * K], K, &qs[dst * K]);
        std::copy_n(&in.k[src * K], K, &ks[dst * K]);
        std::copy_n(&in.v[src * V], V, &vs[dst * V]);
        bs[dst] = in.beta[src];
        gs[dst] = in.g[src];
      }
    kernels::delta_rule_step(qs.data(), ks.data(), vs.data(), bs.data(), gs.data(), state.data(), os.data(), B, H, K,
                             V, scale);
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h) std::copy_n(&os[(size_t(b) * H + h) * V], V, &o[((size_t(b) * T + t) * H + h) * V]);
  }
  EXPECT_TRUE(all_close(o, full.o, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(state, full.ht, 1e-6, 1e-6));
}

// Three segments with the state carried through h0 -> ht equal one pass (chunk form, segment
// lengths not multiples of the chunk size).
TEST(DeltaRule, SegmentsWithCarriedStateMatchOnePass) {
  const int B = 1, H = 2, K = 32, V = 32, C = 16;
  const int lens[3] = {37, 64, 50};
  const int T = lens[0] + lens[1] + lens[2];
  const DeltaInputs in = make_delta_inputs(B, T, H, K, V, true, 31);
  const float scale = 1.f / std::sqrt(float(K));
  const DeltaOut full = run_fwd(in, scale, Form::kChunk, C);
  std::vector<float> state = in.h0, o;
  int t0 = 0;
  for (int s = 0; s < 3; ++s) {
    const int Ts = lens[s];
    auto slice = [&](const std::vector<float>& x, int D) {
      return std::vector<float>(x.begin() + size_t(t0) * H * D, x.begin() + size_t(t0 + Ts) * H * D);
    };
    std::vector<float> qs = slice(in.q, K), ks = slice(in.k, K), vs = slice(in.v, V), bs = slice(in.beta, 1),
                       gs = slice(in.g, 1), os(size_t(Ts) * H * V), next(state.size());
    kernels::delta_rule_chunk_fwd(qs.data(), ks.data(), vs.data(), bs.data(), gs.data(), state.data(), os.data(),
                                  next.data(), B, Ts, H, K, V, scale, C);
    o.insert(o.end(), os.begin(), os.end());
    state = next;
    t0 += Ts;
  }
  // Only the chunk grid differs between the two runs, so agreement is at fp32 rounding (1e-5).
  EXPECT_TRUE(all_close(o, full.o, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(state, full.ht, 1e-5, 1e-5));
}

// T = 16384 with very strong decay (g ~ -100 per token at the low end, fla's normaliser 0.01) and
// with mild decay: everything finite, chunk == recurrent. With strong decay the state forgets within
// a token or two, so fp32 rounding does not accumulate: 1e-5.
TEST(DeltaRule, LongSequenceStrongDecayIsStable) {
  for (float normaliser : {0.01f, 1.f}) {
    SCOPED_TRACE(normaliser);
    const DeltaInputs in = make_delta_inputs(1, 16384, 2, 8, 8, true, 41, normaliser);
    const float scale = 0.35f;
    const DeltaOut rec = run_fwd(in, scale, Form::kRecurrent, 0);
    for (int C : {16, 64}) {
      const DeltaOut chk = run_fwd(in, scale, Form::kChunk, C);
      for (float x : chk.o) ASSERT_TRUE(std::isfinite(x));
      for (float x : chk.ht) ASSERT_TRUE(std::isfinite(x));
      const double tol = normaliser < 0.1f ? 1e-5 : tol_for(16384);
      EXPECT_TRUE(all_close(chk.o, rec.o, tol, tol)) << "C=" << C;
      EXPECT_TRUE(all_close(chk.ht, rec.ht, tol, tol)) << "C=" << C;
    }
  }
}


// The backward at T = 16384 with very strong decay: chunk == recurrent (both BPTT-exact, different
// association), all gradients finite. Same tolerance argument as the forward above (1e-5 relative to
// each tensor's largest entry: the gradient of a token only reaches a few tokens back).
TEST(DeltaRule, LongSequenceStrongDecayBackwardIsStable) {
  const DeltaInputs in = make_delta_inputs(1, 16384, 2, 8, 8, true, 43, 0.01f);
  const float scale = 0.35f;
  const DeltaGrads rec = run_bwd(in, scale, Form::kRecurrent, 0);
  const DeltaGrads chk = run_bwd(in, scale, Form::kChunk, 64);
  const std::vector<const std::vector<float>*> a = {&chk.dq, &chk.dk, &chk.dv, &chk.dbeta, &chk.dg, &chk.dh0};
  const std::vector<const std::vector<float>*> b = {&rec.dq, &rec.dk, &rec.dv, &rec.dbeta, &rec.dg, &rec.dh0};
  const char* names[] = {"dq", "dk", "dv", "dbeta", "dg", "dh0"};
  for (size_t i = 0; i < a.size(); ++i) {
    for (float x : *a[i]) ASSERT_TRUE(std::isfinite(x)) << names[i];
    const double m = max_abs(to_f64(*b[i]));
    EXPECT_TRUE(all_close(*a[i], *b[i], 1e-5 * std::max(m, 1e-3), 1e-5)) << names[i];
  }
}

// ===================================================================================================
// RWKV-7 (DPLR). Inputs as the RWKV-7 layer makes them: kk = L2norm(.), a = -kk, b = kk * alpha with
// alpha = sigmoid(.) in (0, 1), log decay w = -exp(-0.5) sigmoid(.) in (-0.61, 0) (or a stronger
// decay to exercise the chunk form's token-loop fallback), scale 1.
struct DplrInputs {
  int B, T, H, K, V;
  std::vector<float> r, w, k, v, a, b, h0, d_o, dht;
};

DplrInputs make_dplr_inputs(int B, int T, int H, int K, int V, uint64_t seed, float w_scale = 0.6065f) {
  DplrInputs in{B, T, H, K, V, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  const size_t BTH = size_t(B) * T * H;
  in.r = random_floats(BTH * K, seed + 1);
  in.w = random_floats(BTH * K, seed + 2, -4.f, 4.f);
  for (auto& x : in.w) x = -w_scale / (1.f + std::exp(-x));
  in.k = random_floats(BTH * K, seed + 3, -0.5f, 0.5f);
  in.v = random_floats(BTH * V, seed + 4);
  std::vector<float> kk = random_floats(BTH * K, seed + 5), alpha = random_floats(BTH * K, seed + 6, 0.f, 1.f);
  in.a.resize(BTH * K);
  in.b.resize(BTH * K);
  for (size_t row = 0; row < BTH; ++row) {
    float n = 0;
    for (int c = 0; c < K; ++c) n += kk[row * K + c] * kk[row * K + c];
    n = 1.f / std::sqrt(n + 1e-6f);
    for (int c = 0; c < K; ++c) {
      const float x = kk[row * K + c] * n;
      in.a[row * K + c] = -x;
      in.b[row * K + c] = x * alpha[row * K + c];
    }
  }
  in.h0 = random_floats(size_t(B) * H * K * V, seed + 7);
  in.d_o = random_floats(BTH * V, seed + 8);
  in.dht = random_floats(size_t(B) * H * K * V, seed + 9);
  return in;
}

struct DplrRef {
  std::vector<double> o, ht, dr, dw, dk, dv, da, db, dh0;
};

DplrRef run_dplr_ref(const DplrInputs& in, double scale, bool with_bwd = true) {
  const size_t BTH = size_t(in.B) * in.T * in.H, KV = size_t(in.B) * in.H * in.K * in.V;
  DplrRef ref;
  ref.o.resize(BTH * in.V);
  ref.ht.resize(KV);
  auto r = to_f64(in.r), w = to_f64(in.w), k = to_f64(in.k), v = to_f64(in.v), a = to_f64(in.a), b = to_f64(in.b),
       h0 = to_f64(in.h0), d_o = to_f64(in.d_o), dht = to_f64(in.dht);
  kernels::ref::dplr_delta_rule_fwd(r.data(), w.data(), k.data(), v.data(), a.data(), b.data(), h0.data(),
                                    ref.o.data(), ref.ht.data(), in.B, in.T, in.H, in.K, in.V, scale);
  if (!with_bwd) return ref;
  for (auto* x : {&ref.dr, &ref.dw, &ref.dk, &ref.da, &ref.db}) x->resize(BTH * in.K);
  ref.dv.resize(BTH * in.V);
  ref.dh0.resize(KV);
  kernels::ref::dplr_delta_rule_bwd(r.data(), w.data(), k.data(), v.data(), a.data(), b.data(), h0.data(),
                                    d_o.data(), dht.data(), ref.dr.data(), ref.dw.data(), ref.dk.data(),
                                    ref.dv.data(), ref.da.data(), ref.db.data(), ref.dh0.data(), in.B, in.T, in.H,
                                    in.K, in.V, scale);
  return ref;
}

DeltaOut run_dplr_fwd(const DplrInputs& in, float scale, Form form, int C) {
  DeltaOut out;
  out.o.assign(size_t(in.B) * in.T * in.H * in.V, NAN);
  out.ht.assign(size_t(in.B) * in.H * in.K * in.V, NAN);
  if (form == Form::kRecurrent)
    kernels::dplr_delta_rule_recurrent_fwd(in.r.data(), in.w.data(), in.k.data(), in.v.data(), in.a.data(),
                                           in.b.data(), in.h0.data(), out.o.data(), out.ht.data(), in.B, in.T, in.H,
                                           in.K, in.V, scale);
  else
    kernels::dplr_delta_rule_chunk_fwd(in.r.data(), in.w.data(), in.k.data(), in.v.data(), in.a.data(),
                                       in.b.data(), in.h0.data(), out.o.data(), out.ht.data(), in.B, in.T, in.H,
                                       in.K, in.V, scale, C);
  return out;
}

double dplr_loss(const DplrInputs& in, const std::vector<std::vector<double>>& x, double scale) {
  std::vector<double> o(size_t(in.B) * in.T * in.H * in.V), ht(size_t(in.B) * in.H * in.K * in.V);
  kernels::ref::dplr_delta_rule_fwd(x[0].data(), x[1].data(), x[2].data(), x[3].data(), x[4].data(), x[5].data(),
                                    x[6].data(), o.data(), ht.data(), in.B, in.T, in.H, in.K, in.V, scale);
  double l = 0;
  for (size_t i = 0; i < o.size(); ++i) l += o[i] * in.d_o[i];
  for (size_t i = 0; i < ht.size(); ++i) l += ht[i] * in.dht[i];
  return l;
}

// Same finite-difference setting as DeltaRuleRef (step 1e-5, 1e-7 absolute and relative).
TEST(DplrDeltaRuleRef, BackwardMatchesFiniteDifferences) {
  const DplrInputs in = make_dplr_inputs(2, 6, 2, 3, 4, 51, 1.5f);
  const double scale = 0.8;
  const DplrRef ref = run_dplr_ref(in, scale);
  std::vector<std::vector<double>> x = {to_f64(in.r), to_f64(in.w), to_f64(in.k), to_f64(in.v),
                                        to_f64(in.a), to_f64(in.b), to_f64(in.h0)};
  const std::vector<const std::vector<double>*> analytic = {&ref.dr, &ref.dw, &ref.dk, &ref.dv,
                                                            &ref.da, &ref.db, &ref.dh0};
  const char* names[] = {"r", "w", "k", "v", "a", "b", "h0"};
  for (int which = 0; which < 7; ++which) {
    std::vector<double> fd(x[which].size());
    for (size_t i = 0; i < fd.size(); ++i) {
      const double keep = x[which][i], h = 1e-5;
      x[which][i] = keep + h;
      const double lp = dplr_loss(in, x, scale);
      x[which][i] = keep - h;
      const double lm = dplr_loss(in, x, scale);
      x[which][i] = keep;
      fd[i] = (lp - lm) / (2 * h);
    }
    EXPECT_TRUE(all_close(*analytic[which], fd, 1e-7, 1e-7)) << "d" << names[which];
  }
}

TEST(DplrDeltaRule, RecurrentMatchesReference) {
  for (int T : {1, 17, 64, 200, 1000}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    const DplrInputs in = make_dplr_inputs(2, T, 2, 20, 36, 400 + T);
    const float scale = 1.f;
    const DplrRef ref = run_dplr_ref(in, scale);
    const DeltaOut out = run_dplr_fwd(in, scale, Form::kRecurrent, 0);
    const size_t BTH = size_t(in.B) * T * in.H, KV = size_t(in.B) * in.H * in.K * in.V;
    std::vector<float> dr(BTH * in.K, NAN), dw(dr), dk(dr), da(dr), db(dr), dv(BTH * in.V, NAN), dh0(KV, NAN);
    kernels::dplr_delta_rule_recurrent_bwd(in.r.data(), in.w.data(), in.k.data(), in.v.data(), in.a.data(),
                                           in.b.data(), in.h0.data(), in.d_o.data(), in.dht.data(), dr.data(),
                                           dw.data(), dk.data(), dv.data(), da.data(), db.data(), dh0.data(), in.B,
                                           T, in.H, in.K, in.V, scale);
    const double tol = tol_for(T);
    EXPECT_TRUE(close_to_ref(out.o, ref.o, tol)) << "o";
    EXPECT_TRUE(close_to_ref(out.ht, ref.ht, tol)) << "ht";
    EXPECT_TRUE(close_to_ref(dr, ref.dr, tol)) << "dr";
    EXPECT_TRUE(close_to_ref(dw, ref.dw, tol)) << "dw";
    EXPECT_TRUE(close_to_ref(dk, ref.dk, tol)) << "dk";
    EXPECT_TRUE(close_to_ref(dv, ref.dv, tol)) << "dv";
    EXPECT_TRUE(close_to_ref(da, ref.da, tol)) << "da";
    EXPECT_TRUE(close_to_ref(db, ref.db, tol)) << "db";
    EXPECT_TRUE(close_to_ref(dh0, ref.dh0, tol)) << "dh0";
  }
}

TEST(DplrDeltaRule, ChunkMatchesReference) {
  for (int T : {1, 17, 64, 200, 1000})
    for (int C : {16, 64}) {
      SCOPED_TRACE("T=" + std::to_string(T) + " C=" + std::to_string(C));
      const DplrInputs in = make_dplr_inputs(2, T, 2, 20, 36, 500 + T);
      const DplrRef ref = run_dplr_ref(in, 1.0, false);
      const DeltaOut out = run_dplr_fwd(in, 1.f, Form::kChunk, C);
      EXPECT_TRUE(close_to_ref(out.o, ref.o, tol_for(T))) << "o";
      EXPECT_TRUE(close_to_ref(out.ht, ref.ht, tol_for(T))) << "ht";
    }
}

// Wide heads (full register tiles), odd chunk sizes, and decays strong enough (w down to -8 per token)
// that some chunks exceed kDplrChunkMaxLogDecay and take the token-loop path while others do not.
TEST(DplrDeltaRule, ChunkMatchesReferenceWideHeadsAndStrongDecay) {
  struct Case {
    int T, K, V, C;
    float w_scale;
  };
  for (const Case& cs : {Case{130, 64, 64, 32, 0.6065f}, Case{70, 64, 48, 7, 0.6065f}, Case{100, 16, 80, 16, 8.f},
                         Case{90, 32, 32, 64, 2.f}}) {
    SCOPED_TRACE("T=" + std::to_string(cs.T) + " K=" + std::to_string(cs.K) + " C=" + std::to_string(cs.C) +
                 " w_scale=" + std::to_string(cs.w_scale));
    const DplrInputs in = make_dplr_inputs(1, cs.T, 3, cs.K, cs.V, 600 + cs.C, cs.w_scale);
    const float scale = 0.5f;
    const DplrRef ref = run_dplr_ref(in, scale, false);
    const DeltaOut out = run_dplr_fwd(in, scale, Form::kChunk, cs.C);
    EXPECT_TRUE(close_to_ref(out.o, ref.o, tol_for(cs.T))) << "o";
    EXPECT_TRUE(close_to_ref(out.ht, ref.ht, tol_for(cs.T))) << "ht";
    // The strong-decay cases must really mix factored chunks and token-loop chunks.
    int strong = 0, total = 0;
    for (int h = 0; h < in.H; ++h)
      for (int t0 = 0; t0 < in.T; t0 += cs.C, ++total) {
        double lowest = 0;
        for (int c = 0; c < in.K; ++c) {
          double sum = 0;
          for (int t = t0; t < std::min(in.T, t0 + cs.C); ++t) sum += in.w[(size_t(t) * in.H + h) * in.K + c];
          lowest = std::min(lowest, sum);
        }
        strong += lowest < -kernels::kDplrChunkMaxLogDecay;
      }
    if (cs.w_scale > 1.f) {
      EXPECT_GT(strong, 0);
      EXPECT_LT(strong, total);
    } else {
      EXPECT_EQ(strong, 0);
    }
  }
}

TEST(DplrDeltaRule, StepMatchesRecurrentAndChunkCarriesState) {
  const int B = 2, T = 45, H = 2, K = 32, V = 24;
  const DplrInputs in = make_dplr_inputs(B, T, H, K, V, 61);
  const float scale = 1.f;
  const DeltaOut full = run_dplr_fwd(in, scale, Form::kRecurrent, 0);
  std::vector<float> state = in.h0, o(size_t(B) * T * H * V);
  std::vector<float> rs(size_t(B) * H * K), ws(rs.size()), ks(rs.size()), as(rs.size()), bs(rs.size()),
      vs(size_t(B) * H * V), os(vs.size());
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h) {
        const size_t src = (size_t(b) * T + t) * H + h, dst = size_t(b) * H + h;
        std::copy_n(&in.r[src * K], K, &rs[dst * K]);
        std::copy_n(&in.w[src * K], K, &ws[dst * K]);
        std::copy_n(&in.k[src * K], K, &ks[dst * K]);
        std::copy_n(&in.a[src * K], K, &as[dst * K]);
        std::copy_n(&in.b[src * K], K, &bs[dst * K]);
        std::copy_n(&in.v[src * V], V, &vs[dst * V]);
      }
    kernels::dplr_delta_rule_step(rs.data(), ws.data(), ks.data(), vs.data(), as.data(), bs.data(), state.data(),
                                  os.data(), B, H, K, V, scale);
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h) std::copy_n(&os[(size_t(b) * H + h) * V], V, &o[((size_t(b) * T + t) * H + h) * V]);
  }
  // Same arithmetic as the recurrent forward: 1e-6.
  EXPECT_TRUE(all_close(o, full.o, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(state, full.ht, 1e-6, 1e-6));

  // Two chunked segments (20 + 25 tokens, C = 16) with the state carried == the recurrent pass; the
  // forms differ in summation order only (1e-5).
  std::vector<float> carried = in.h0, o2;
  int t0 = 0;
  for (int Ts : {20, 25}) {
    DplrInputs seg{B, Ts, H, K, V, {}, {}, {}, {}, {}, {}, carried, {}, {}};
    auto slice = [&](const std::vector<float>& x, int D) {
      std::vector<float> out;
      for (int b = 0; b < B; ++b)
        out.insert(out.end(), x.begin() + (size_t(b) * T + t0) * H * D, x.begin() + (size_t(b) * T + t0 + Ts) * H * D);
      return out;
    };
    seg.r = slice(in.r, K);
    seg.w = slice(in.w, K);
    seg.k = slice(in.k, K);
    seg.a = slice(in.a, K);
    seg.b = slice(in.b, K);
    seg.v = slice(in.v, V);
    const DeltaOut part = run_dplr_fwd(seg, scale, Form::kChunk, 16);
    carried = part.ht;
    o2.insert(o2.end(), part.o.begin(), part.o.end());
    t0 += Ts;
  }
  // o2 is segment-major ([seg][B][Ts]...): reorder to [B][T] for the comparison.
  std::vector<float> o2_bt(o2.size());
  size_t off = 0;
  t0 = 0;
  for (int Ts : {20, 25}) {
    for (int b = 0; b < B; ++b) {
      const size_t n = size_t(Ts) * H * V;
      std::copy_n(&o2[off], n, &o2_bt[(size_t(b) * T + t0) * H * V]);
      off += n;
    }
    t0 += Ts;
  }
  EXPECT_TRUE(all_close(o2_bt, full.o, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(carried, full.ht, 1e-5, 1e-5));
}


// The decays exp(w) come from the kernels' own vectorised exp: with k = a = b = 0 the final state is
// ht[c, :] = exp(w_c) h0[c, :], so h0 = 1 exposes it. Compared with libm over w in [-100, 0] at 3 ulp
// (rtol 2e-7) plus atol 1.2e-38 (exp below -87.3 is flushed to 0, the smallest normal float).
TEST(DplrDeltaRule, DecayExpIsAccurate) {
  const int H = 64, K = 64, V = 1;
  std::vector<float> w(size_t(H) * K), zeros(w.size(), 0.f), v(size_t(H) * V, 0.f), h0(size_t(H) * K * V, 1.f),
      o(size_t(H) * V), ht(h0.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = -100.f * float(i) / float(w.size() - 1);
  kernels::dplr_delta_rule_recurrent_fwd(zeros.data(), w.data(), zeros.data(), v.data(), zeros.data(), zeros.data(),
                                         h0.data(), o.data(), ht.data(), 1, 1, H, K, V, 1.f);
  std::vector<double> want(w.size());
  for (size_t i = 0; i < w.size(); ++i) want[i] = std::exp(double(w[i]));
  EXPECT_TRUE(all_close(ht, want, 1.2e-38, 2e-7));
}

}  // namespace
}  // namespace sw
