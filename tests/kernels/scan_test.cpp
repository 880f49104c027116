// Scan kernels (kernels/scan): Mamba1 selective scan, HGRN element-wise recurrence, TTT-Linear.
//
// Correctness chain: the f64 references (kernels/ref/scan_ref.h) are checked against finite
// differences of themselves (backward) on tiny shapes; the fp32 kernels, in both forms (sequential
// token loop and Blelloch parallel scan), are checked against the references for outputs, final
// states and every gradient over T in {1, 17, 64, 200, 1000}; plus decode step == forward, state
// carried over three segments == one pass, and a T = 16384 strong-decay run that must stay finite.
// TTT-Linear has no f64 backward: its fp32 dual form is checked against the f64 primal form, and
// its gradients against central differences of that f64 forward (every element on tiny shapes,
// directional derivatives on longer ones); the inner LayerNorm+L2 gradient itself is checked
// against finite differences of the inner loss.
//
// Tolerances. fp32 kernel vs f64 reference: each step rounds at ~6e-8 relative (our exp is within
// ~1e-7), and the recurrences are contractions (|exp(dt A)| <= 1), so errors accumulate like a
// random walk over the effective memory of the state: ~sqrt(T) * 1e-7 relative to the magnitude of
// the summed terms. We use atol = rtol = kF32 * sqrt(T + 1) with kF32 = 1e-6 (a 10x margin over
// 1e-7 for the constant in front, which counts the N-term and D-term sums per output), scaled by the
// typical magnitude of the compared quantity where it is far from 1 (parameter gradients sum over
// B * T terms). f64 finite differences: central differences with step 1e-6 have truncation error
// ~1e-12 * f''' and rounding error ~1e-16 / 1e-6 = 1e-10, so 1e-6 relative is a safe, still tight bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "kernels/ref/scan_ref.h"
#include "kernels/scan/elementwise_scan.h"
#include "kernels/scan/selective_scan.h"
#include "kernels/scan/ttt_linear.h"
#include "testing.h"

namespace sw::kernels::scan {
namespace {

using sw::testing::all_close;
using sw::testing::random_floats;
using sw::testing::to_f64;

constexpr double kF32 = 1e-6;
double f32_tol(int64_t T) { return kF32 * std::sqrt(static_cast<double>(T) + 1.0); }

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central finite difference of f at x[i].
double central_diff(std::vector<double>& x, size_t i, const std::function<double()>& f, double h = 1e-6) {
  const double x0 = x[i];
  x[i] = x0 + h;
  const double fp = f();
  x[i] = x0 - h;
  const double fm = f();
  x[i] = x0;
  return (fp - fm) / (2 * h);
}

// ------------------------------------------------------------------------------------------------
// Selective scan

struct SsOptions {
  bool softplus = true, has_z = true, has_skip = true, has_bias = true, has_h0 = true;
};

// All inputs of one selective-scan problem in fp32, with f64 copies for the reference.
struct SsProblem {
  int64_t B, T, D, N;
  SsOptions opt;
  std::vector<float> u, delta, A, Bm, Cm, Dskip, z, bias, h0, dout, dht;
  std::vector<double> u64, delta64, A64, Bm64, Cm64, Dskip64, z64, bias64, h064, dout64, dht64;

  SsProblem(int64_t B_, int64_t T_, int64_t D_, int64_t N_, SsOptions o, uint64_t seed, float dt_lo = -4.f,
            float dt_hi = -1.f)
      : B(B_), T(T_), D(D_), N(N_), opt(o) {
    u = random_floats(B * T * D, seed + 1);
    // With softplus and a bias near -2, dt spans roughly [0.01, 0.3] as in a trained Mamba.
    delta = random_floats(B * T * D, seed + 2, o.softplus ? dt_lo + 2.f : 0.01f, o.softplus ? dt_hi + 2.f : 0.3f);
    A = random_floats(D * N, seed + 3, -8.f, -0.5f);
    Bm = random_floats(B * T * N, seed + 4);
    Cm = random_floats(B * T * N, seed + 5);
    Dskip = random_floats(D, seed + 6, 0.5f, 1.5f);
    z = random_floats(B * T * D, seed + 7, -2.f, 2.f);
    bias = random_floats(D, seed + 8, -2.5f, -1.5f);
    h0 = random_floats(B * D * N, seed + 9);
    dout = random_floats(B * T * D, seed + 10);
    dht = random_floats(B * D * N, seed + 11);
    refresh64();
  }
  void refresh64() {
    u64 = to_f64(u), delta64 = to_f64(delta), A64 = to_f64(A), Bm64 = to_f64(Bm), Cm64 = to_f64(Cm);
    Dskip64 = to_f64(Dskip), z64 = to_f64(z), bias64 = to_f64(bias), h064 = to_f64(h0);
    dout64 = to_f64(dout), dht64 = to_f64(dht);
  }
  SelectiveScanInputs inputs() const {
    SelectiveScanInputs in;
    in.u = u.data(), in.delta = delta.data(), in.A = A.data(), in.Bm = Bm.data(), in.Cm = Cm.data();
    in.Dskip = opt.has_skip ? Dskip.data() : nullptr;
    in.z = opt.has_z ? z.data() : nullptr;
    in.delta_bias = opt.has_bias ? bias.data() : nullptr;
    in.h0 = opt.has_h0 ? h0.data() : nullptr;
    in.delta_softplus = opt.softplus;
    in.B = B, in.T = T, in.D = D, in.N = N;
    return in;
  }
  ref::SelectiveScanRefInputs ref_inputs() const {
    ref::SelectiveScanRefInputs in;
    in.u = u64.data(), in.delta = delta64.data(), in.A = A64.data(), in.Bm = Bm64.data(), in.Cm = Cm64.data();
    in.Dskip = opt.has_skip ? Dskip64.data() : nullptr;
    in.z = opt.has_z ? z64.data() : nullptr;
    in.delta_bias = opt.has_bias ? bias64.data() : nullptr;
    in.h0 = opt.has_h0 ? h064.data() : nullptr;
    in.delta_softplus = opt.softplus;
    in.B = B, in.T = T, in.D = D, in.N = N;
    return in;
  }
};

struct SsGrads {
  std::vector<float> du, ddelta, dA, dBm, dCm, dDskip, dz, dbias, dh0;
  SsGrads(const SsProblem& p)
      : du(p.B * p.T * p.D, NAN), ddelta(p.B * p.T * p.D, NAN), dA(p.D * p.N, NAN), dBm(p.B * p.T * p.N, NAN),
        dCm(p.B * p.T * p.N, NAN), dDskip(p.D, NAN), dz(p.B * p.T * p.D, NAN), dbias(p.D, NAN),
        dh0(p.B * p.D * p.N, NAN) {}
  SelectiveScanGrads ptrs(const SsOptions& o) {
    SelectiveScanGrads g;
    g.du = du.data(), g.ddelta = ddelta.data(), g.dA = dA.data(), g.dBm = dBm.data(), g.dCm = dCm.data();
    g.dDskip = o.has_skip ? dDskip.data() : nullptr;
    g.dz = o.has_z ? dz.data() : nullptr;
    g.ddelta_bias = o.has_bias ? dbias.data() : nullptr;
    g.dh0 = o.has_h0 ? dh0.data() : nullptr;
    return g;
  }
};

struct SsGrads64 {
  std::vector<double> du, ddelta, dA, dBm, dCm, dDskip, dz, dbias, dh0;
  explicit SsGrads64(const SsProblem& p)
      : du(p.B * p.T * p.D), ddelta(p.B * p.T * p.D), dA(p.D * p.N), dBm(p.B * p.T * p.N), dCm(p.B * p.T * p.N),
        dDskip(p.D), dz(p.B * p.T * p.D), dbias(p.D), dh0(p.B * p.D * p.N) {}
  void run(const SsProblem& p, const double* dht) {
    ref::selective_scan_ref_bwd(p.ref_inputs(), p.dout64.data(), dht, du.data(), ddelta.data(), dA.data(),
                                dBm.data(), dCm.data(), dDskip.data(), dz.data(), dbias.data(), dh0.data());
  }
};

TEST(SelectiveScanRef, BackwardMatchesFiniteDifferences) {
  SsProblem p(2, 5, 3, 4, SsOptions{}, 100);
  auto loss = [&]() {
    std::vector<double> out(p.B * p.T * p.D), ht(p.B * p.D * p.N);
    ref::selective_scan_ref_fwd(p.ref_inputs(), out.data(), ht.data());
    return dot(out, p.dout64) + dot(ht, p.dht64);
  };
  SsGrads64 g(p);
  g.run(p, p.dht64.data());
  struct Case {
    const char* name;
    std::vector<double>* x;
    const std::vector<double>* grad;
  } cases[] = {{"u", &p.u64, &g.du},        {"delta", &p.delta64, &g.ddelta}, {"A", &p.A64, &g.dA},
               {"Bm", &p.Bm64, &g.dBm},     {"Cm", &p.Cm64, &g.dCm},          {"Dskip", &p.Dskip64, &g.dDskip},
               {"z", &p.z64, &g.dz},        {"bias", &p.bias64, &g.dbias},    {"h0", &p.h064, &g.dh0}};
  for (auto& c : cases) {
    std::vector<double> fd(c.x->size());
    for (size_t i = 0; i < fd.size(); ++i) fd[i] = central_diff(*c.x, i, loss);
    EXPECT_TRUE(all_close(*c.grad, fd, 1e-6, 1e-6)) << c.name;
  }
  // Without softplus, the raw delta is the step itself.
  SsProblem q(1, 4, 2, 3, SsOptions{false, false, false, false, false}, 200);
  auto loss_q = [&]() {
    std::vector<double> out(q.B * q.T * q.D);
    ref::selective_scan_ref_fwd(q.ref_inputs(), out.data(), nullptr);
    return dot(out, q.dout64);
  };
  SsGrads64 gq(q);
  gq.run(q, nullptr);
  std::vector<double> fd(q.delta64.size());
  for (size_t i = 0; i < fd.size(); ++i) fd[i] = central_diff(q.delta64, i, loss_q);
  EXPECT_TRUE(all_close(gq.ddelta, fd, 1e-6, 1e-6));
}

void check_ss_forward(const SsProblem& p, ScanForm form) {
  std::vector<float> out(p.B * p.T * p.D, NAN), ht(p.B * p.D * p.N, NAN);
  selective_scan_fwd(p.inputs(), out.data(), ht.data(), form);
  std::vector<double> out64(out.size()), ht64(ht.size());
  ref::selective_scan_ref_fwd(p.ref_inputs(), out64.data(), ht64.data());
  const double tol = f32_tol(p.T);
  EXPECT_TRUE(all_close(out, out64, tol, tol)) << "out";
  EXPECT_TRUE(all_close(ht, ht64, tol, tol)) << "ht";
}

void check_ss_backward(const SsProblem& p, ScanForm form) {
  SsGrads g(p);
  selective_scan_bwd(p.inputs(), p.dout.data(), p.dht.data(), g.ptrs(p.opt), form);
  SsGrads64 r(p);
  r.run(p, p.dht64.data());
  const double tol = f32_tol(p.T);
  auto check = [&](const char* name, const std::vector<float>& got, const std::vector<double>& want) {
    // Parameter gradients are sums over B*T tokens (and N or channels): compare relative to their scale.
    const double scale = std::max(1.0, max_abs(want));
    EXPECT_TRUE(all_close(got, want, tol * scale, tol)) << name << " (T=" << p.T << ")";
  };
  check("du", g.du, r.du);
  check("ddelta", g.ddelta, r.ddelta);
  check("dA", g.dA, r.dA);
  check("dBm", g.dBm, r.dBm);
  check("dCm", g.dCm, r.dCm);
  if (p.opt.has_skip) check("dDskip", g.dDskip, r.dDskip);
  if (p.opt.has_z) check("dz", g.dz, r.dz);
  if (p.opt.has_bias) check("ddelta_bias", g.dbias, r.dbias);
  if (p.opt.has_h0) check("dh0", g.dh0, r.dh0);
}

const int64_t kLengths[] = {1, 17, 64, 200, 1000};

TEST(SelectiveScan, ForwardMatchesReference) {
  for (int64_t T : kLengths)
    for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
      SCOPED_TRACE(::testing::Message() << "T=" << T << " form=" << static_cast<int>(form));
      // D = 20: one full block of 16 channels and one partial block.
      check_ss_forward(SsProblem(2, T, 20, 16, SsOptions{}, 300 + T), form);
      check_ss_forward(SsProblem(1, T, 7, 5, SsOptions{false, false, false, false, false}, 400 + T), form);
      // 2 x 17 channel blocks: enough work items that the forward groups several blocks per item.
      check_ss_forward(SsProblem(2, T, 260, 4, SsOptions{}, 450 + T), form);
    }
}

TEST(SelectiveScan, BackwardMatchesReference) {
  for (int64_t T : kLengths)
    for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
      SCOPED_TRACE(::testing::Message() << "T=" << T << " form=" << static_cast<int>(form));
      check_ss_backward(SsProblem(2, T, 20, 16, SsOptions{}, 500 + T), form);
      check_ss_backward(SsProblem(1, T, 7, 5, SsOptions{false, false, false, false, false}, 600 + T), form);
    }
}

TEST(SelectiveScan, LargeStatesMatchReference) {
  // Larger N shortens the kernel's recompute chunks (64 tokens at N <= 16, down to 8 at N = 128).
  for (int64_t N : {32, 128})
    for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
      SCOPED_TRACE(::testing::Message() << "N=" << N << " form=" << static_cast<int>(form));
      SsProblem p(1, 77, 17, N, SsOptions{}, 660 + N);
      check_ss_forward(p, form);
      check_ss_backward(p, form);
    }
}

TEST(SelectiveScan, AbsentInputsGiveGradientsAtZero) {
  // Without Dskip, delta_bias or h0, their gradients (when asked for) are those at a zero input.
  SsProblem p(2, 37, 19, 8, SsOptions{true, true, false, false, false}, 650);
  SsGrads g(p);
  SelectiveScanGrads ptrs = g.ptrs(SsOptions{});  // every gradient, including dDskip, dbias, dh0
  selective_scan_bwd(p.inputs(), p.dout.data(), p.dht.data(), ptrs);
  SsProblem q = p;
  q.opt = SsOptions{};
  std::fill(q.Dskip.begin(), q.Dskip.end(), 0.f), std::fill(q.bias.begin(), q.bias.end(), 0.f);
  std::fill(q.h0.begin(), q.h0.end(), 0.f);
  q.refresh64();
  SsGrads64 r(q);
  r.run(q, q.dht64.data());
  const double tol = f32_tol(p.T);
  EXPECT_TRUE(all_close(g.dDskip, r.dDskip, tol * std::max(1.0, max_abs(r.dDskip)), tol));
  EXPECT_TRUE(all_close(g.dbias, r.dbias, tol * std::max(1.0, max_abs(r.dbias)), tol));
  EXPECT_TRUE(all_close(g.dh0, r.dh0, tol, tol));
  EXPECT_TRUE(all_close(g.du, r.du, tol, tol));
}

TEST(SelectiveScan, SequentialEqualsBlelloch) {
  // Both forms in fp32 differ only in summation order: same sqrt(T) bound, directly.
  SsProblem p(2, 333, 37, 32, SsOptions{}, 700);
  std::vector<float> o1(p.B * p.T * p.D), o2(o1.size()), h1(p.B * p.D * p.N), h2(h1.size());
  selective_scan_fwd(p.inputs(), o1.data(), h1.data(), ScanForm::sequential);
  selective_scan_fwd(p.inputs(), o2.data(), h2.data(), ScanForm::blelloch);
  const double tol = f32_tol(p.T);
  EXPECT_TRUE(all_close(o1, o2, tol, tol));
  EXPECT_TRUE(all_close(h1, h2, tol, tol));
  SsGrads g1(p), g2(p);
  selective_scan_bwd(p.inputs(), p.dout.data(), p.dht.data(), g1.ptrs(p.opt), ScanForm::sequential);
  selective_scan_bwd(p.inputs(), p.dout.data(), p.dht.data(), g2.ptrs(p.opt), ScanForm::blelloch);
  EXPECT_TRUE(all_close(g1.du, g2.du, tol, tol));
  EXPECT_TRUE(all_close(g1.ddelta, g2.ddelta, tol, tol));
  EXPECT_TRUE(all_close(g1.dBm, g2.dBm, tol * 10, tol));  // sums over 37 channels
  EXPECT_TRUE(all_close(g1.dCm, g2.dCm, tol * 10, tol));
  EXPECT_TRUE(all_close(g1.dh0, g2.dh0, tol, tol));
  EXPECT_TRUE(all_close(g1.dA, g2.dA, tol * 100, tol));  // sums over B*T = 666 tokens
}

TEST(SelectiveScan, ThreeSegmentsEqualOnePass) {
  const int64_t B = 2, D = 18, N = 8;
  const int64_t cuts[] = {0, 50, 51, 130};  // segment lengths 50, 1, 79
  SsProblem full(B, cuts[3], D, N, SsOptions{}, 800);
  std::vector<float> out_full(B * cuts[3] * D), ht_full(B * D * N);
  selective_scan_fwd(full.inputs(), out_full.data(), ht_full.data());
  SsGrads g_full(full);
  selective_scan_bwd(full.inputs(), full.dout.data(), full.dht.data(), g_full.ptrs(full.opt));

  // Slice [B, T, X] tensors along T.
  auto slice = [&](const std::vector<float>& x, int64_t X, int64_t t0, int64_t t1) {
    std::vector<float> s(B * (t1 - t0) * X);
    for (int64_t b = 0; b < B; ++b)
      std::copy(x.begin() + (b * cuts[3] + t0) * X, x.begin() + (b * cuts[3] + t1) * X,
                s.begin() + b * (t1 - t0) * X);
    return s;
  };
  for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
    std::vector<float> state = full.h0, states[4], out_seg(B * cuts[3] * D);
    states[0] = state;
    std::vector<SsProblem> segs;
    for (int s = 0; s < 3; ++s) {
      const int64_t t0 = cuts[s], t1 = cuts[s + 1], Ts = t1 - t0;
      SsProblem seg = full;
      seg.T = Ts;
      seg.u = slice(full.u, D, t0, t1), seg.delta = slice(full.delta, D, t0, t1), seg.z = slice(full.z, D, t0, t1);
      seg.Bm = slice(full.Bm, N, t0, t1), seg.Cm = slice(full.Cm, N, t0, t1);
      seg.dout = slice(full.dout, D, t0, t1);
      seg.h0 = state;
      std::vector<float> o(B * Ts * D), ht(B * D * N);
      selective_scan_fwd(seg.inputs(), o.data(), ht.data(), form);
      for (int64_t b = 0; b < B; ++b)
        std::copy(o.begin() + b * Ts * D, o.begin() + (b + 1) * Ts * D, out_seg.begin() + (b * cuts[3] + t0) * D);
      state = ht;
      states[s + 1] = state;
      segs.push_back(seg);
    }
    EXPECT_TRUE(all_close(out_seg, out_full, 1e-6, 1e-6));
    EXPECT_TRUE(all_close(state, ht_full, 1e-6, 1e-6));
    // Backward in reverse segment order, each segment's dh0 feeding the previous one's dht.
    std::vector<float> dcarry = full.dht, du_seg(B * cuts[3] * D), dA_sum(D * N, 0.f);
    for (int s = 2; s >= 0; --s) {
      SsGrads g(segs[s]);
      selective_scan_bwd(segs[s].inputs(), segs[s].dout.data(), dcarry.data(), g.ptrs(segs[s].opt), form);
      const int64_t Ts = cuts[s + 1] - cuts[s];
      for (int64_t b = 0; b < B; ++b)
        std::copy(g.du.begin() + b * Ts * D, g.du.begin() + (b + 1) * Ts * D,
                  du_seg.begin() + (b * cuts[3] + cuts[s]) * D);
      for (int64_t i = 0; i < D * N; ++i) dA_sum[i] += g.dA[i];
      dcarry = g.dh0;
    }
    EXPECT_TRUE(all_close(du_seg, g_full.du, 1e-5, 1e-5));
    EXPECT_TRUE(all_close(dcarry, g_full.dh0, 1e-5, 1e-5));
    EXPECT_TRUE(all_close(dA_sum, g_full.dA, 1e-4, 1e-5));  // sums of ~260 terms in different orders
  }
}

TEST(SelectiveScan, StepMatchesForward) {
  SsProblem p(3, 40, 21, 16, SsOptions{}, 900);
  std::vector<float> out(p.B * p.T * p.D), ht(p.B * p.D * p.N);
  selective_scan_fwd(p.inputs(), out.data(), ht.data());
  std::vector<float> h = p.h0, o(p.B * p.D), u(p.B * p.D), dl(p.B * p.D), z(p.B * p.D), Bm(p.B * p.N),
                     Cm(p.B * p.N), out_step(out.size());
  for (int64_t t = 0; t < p.T; ++t) {
    for (int64_t b = 0; b < p.B; ++b) {
      for (int64_t d = 0; d < p.D; ++d) {
        const int64_t i = (b * p.T + t) * p.D + d;
        u[b * p.D + d] = p.u[i], dl[b * p.D + d] = p.delta[i], z[b * p.D + d] = p.z[i];
      }
      for (int64_t n = 0; n < p.N; ++n)
        Bm[b * p.N + n] = p.Bm[(b * p.T + t) * p.N + n], Cm[b * p.N + n] = p.Cm[(b * p.T + t) * p.N + n];
    }
    selective_scan_step(u.data(), dl.data(), p.A.data(), Bm.data(), Cm.data(), p.Dskip.data(), z.data(),
                        p.bias.data(), true, h.data(), o.data(), p.B, p.D, p.N);
    for (int64_t b = 0; b < p.B; ++b)
      std::copy(o.begin() + b * p.D, o.begin() + (b + 1) * p.D, out_step.begin() + (b * p.T + t) * p.D);
  }
  // Same arithmetic per state element; only the order of the N-term output sum differs.
  EXPECT_TRUE(all_close(out_step, out, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(h, ht, 1e-6, 1e-6));
}

TEST(SelectiveScan, LongSequenceStrongDecayStaysFinite) {
  // dt up to softplus(5) ~ 5 with A down to -8: decays as small as e^-40 per step, and some e^-0.005.
  const int64_t T = 16384;
  SsProblem p(1, T, 16, 16, SsOptions{}, 1000, -8.f, 3.f);
  for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
    std::vector<float> out(T * p.D), ht(p.D * p.N);
    selective_scan_fwd(p.inputs(), out.data(), ht.data(), form);
    std::vector<double> out64(out.size()), ht64(ht.size());
    ref::selective_scan_ref_fwd(p.ref_inputs(), out64.data(), ht64.data());
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return std::isfinite(v); }));
    const double tol = f32_tol(T);
    EXPECT_TRUE(all_close(out, out64, tol * std::max(1.0, max_abs(out64)), tol));
    SsGrads g(p);
    selective_scan_bwd(p.inputs(), p.dout.data(), p.dht.data(), g.ptrs(p.opt), form);
    for (auto* v : {&g.du, &g.ddelta, &g.dA, &g.dBm, &g.dCm, &g.dz, &g.dh0})
      EXPECT_TRUE(std::all_of(v->begin(), v->end(), [](float x) { return std::isfinite(x); }));
  }
}

// ------------------------------------------------------------------------------------------------
// HGRN

struct HgrnProblem {
  int64_t B, T, D;
  std::vector<float> x, g, h0, dout, dht;
  HgrnProblem(int64_t B_, int64_t T_, int64_t D_, uint64_t seed, float g_lo = -2.f, float g_hi = -0.01f)
      : B(B_), T(T_), D(D_) {
    x = random_floats(B * T * D, seed + 1);
    g = random_floats(B * T * D, seed + 2, g_lo, g_hi);
    h0 = random_floats(B * D, seed + 3);
    dout = random_floats(B * T * D, seed + 4);
    dht = random_floats(B * D, seed + 5);
  }
};

TEST(HgrnRef, BackwardMatchesFiniteDifferences) {
  HgrnProblem p(2, 6, 3, 1100);
  auto x = to_f64(p.x), g = to_f64(p.g), h0 = to_f64(p.h0), dout = to_f64(p.dout), dht = to_f64(p.dht);
  auto loss = [&]() {
    std::vector<double> o(x.size()), ht(h0.size());
    ref::hgrn_ref_fwd(x.data(), g.data(), h0.data(), o.data(), ht.data(), p.B, p.T, p.D);
    return dot(o, dout) + dot(ht, dht);
  };
  std::vector<double> dx(x.size()), dg(x.size()), dh0(h0.size());
  ref::hgrn_ref_bwd(x.data(), g.data(), h0.data(), dout.data(), dht.data(), dx.data(), dg.data(), dh0.data(), p.B,
                    p.T, p.D);
  for (auto [v, grad] : {std::pair{&x, &dx}, std::pair{&g, &dg}, std::pair{&h0, &dh0}}) {
    std::vector<double> fd(v->size());
    for (size_t i = 0; i < fd.size(); ++i) fd[i] = central_diff(*v, i, loss);
    EXPECT_TRUE(all_close(*grad, fd, 1e-6, 1e-6));
  }
}

TEST(Hgrn, ForwardAndBackwardMatchReference) {
  for (int64_t T : kLengths)
    for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
      SCOPED_TRACE(::testing::Message() << "T=" << T << " form=" << static_cast<int>(form));
      HgrnProblem p(2, T, 70, 1200 + T);  // 70 channels: a full block of 64 and a partial one
      std::vector<float> o(p.B * T * p.D, NAN), ht(p.B * p.D, NAN);
      hgrn_fwd(p.x.data(), p.g.data(), p.h0.data(), o.data(), ht.data(), p.B, T, p.D, form);
      auto x = to_f64(p.x), g = to_f64(p.g), h0 = to_f64(p.h0);
      std::vector<double> o64(o.size()), ht64(ht.size());
      ref::hgrn_ref_fwd(x.data(), g.data(), h0.data(), o64.data(), ht64.data(), p.B, T, p.D);
      const double tol = f32_tol(T);
      EXPECT_TRUE(all_close(o, o64, tol, tol));
      EXPECT_TRUE(all_close(ht, ht64, tol, tol));

      std::vector<float> dx(o.size(), NAN), dg(o.size(), NAN), dh0(ht.size(), NAN);
      hgrn_bwd(p.g.data(), o.data(), p.h0.data(), p.dout.data(), p.dht.data(), dx.data(), dg.data(), dh0.data(), p.B,
               T, p.D, form);
      std::vector<double> dx64(o.size()), dg64(o.size()), dh064(ht.size());
      auto dout = to_f64(p.dout), dht = to_f64(p.dht);
      ref::hgrn_ref_bwd(x.data(), g.data(), h0.data(), dout.data(), dht.data(), dx64.data(), dg64.data(),
                        dh064.data(), p.B, T, p.D);
      EXPECT_TRUE(all_close(dx, dx64, tol, tol));
      EXPECT_TRUE(all_close(dg, dg64, tol, tol));
      EXPECT_TRUE(all_close(dh0, dh064, tol, tol));
    }
}

TEST(Hgrn, NoInitialStateAndStep) {
  HgrnProblem p(2, 33, 10, 1300);
  std::vector<float> o(p.B * p.T * p.D), ht(p.B * p.D);
  hgrn_fwd(p.x.data(), p.g.data(), nullptr, o.data(), ht.data(), p.B, p.T, p.D);
  std::vector<float> h(p.B * p.D, 0.f), xs(p.B * p.D), gs(p.B * p.D), os(p.B * p.D), o_step(o.size());
  for (int64_t t = 0; t < p.T; ++t) {
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t d = 0; d < p.D; ++d)
        xs[b * p.D + d] = p.x[(b * p.T + t) * p.D + d], gs[b * p.D + d] = p.g[(b * p.T + t) * p.D + d];
    hgrn_step(xs.data(), gs.data(), h.data(), os.data(), p.B, p.D);
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t d = 0; d < p.D; ++d) o_step[(b * p.T + t) * p.D + d] = os[b * p.D + d];
  }
  // Identical arithmetic, token by token: bitwise equal.
  EXPECT_TRUE(all_close(o_step, o, 0.0, 0.0));
  EXPECT_TRUE(all_close(h, ht, 0.0, 0.0));
  // Backward without h0 or dht: dg at t = 0 must be 0 (h_{-1} = 0).
  std::vector<float> dx(o.size()), dg(o.size());
  hgrn_bwd(p.g.data(), o.data(), nullptr, p.dout.data(), nullptr, dx.data(), dg.data(), nullptr, p.B, p.T, p.D);
  for (int64_t d = 0; d < p.D; ++d) EXPECT_EQ(dg[d], 0.f);
  auto x = to_f64(p.x), g = to_f64(p.g), dout = to_f64(p.dout);
  std::vector<double> dx64(o.size()), dg64(o.size());
  ref::hgrn_ref_bwd(x.data(), g.data(), nullptr, dout.data(), nullptr, dx64.data(), dg64.data(), nullptr, p.B, p.T,
                    p.D);
  const double tol = f32_tol(p.T);
  EXPECT_TRUE(all_close(dx, dx64, tol, tol));
  EXPECT_TRUE(all_close(dg, dg64, tol, tol));
}

TEST(Hgrn, ThreeSegmentsEqualOnePass) {
  const int64_t B = 1, D = 96, T = 700;
  const int64_t cuts[] = {0, 256, 257, T};
  HgrnProblem p(B, T, D, 1400);
  std::vector<float> o(T * D), ht(D);
  hgrn_fwd(p.x.data(), p.g.data(), p.h0.data(), o.data(), ht.data(), B, T, D);
  for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
    std::vector<float> state = p.h0, o_seg(T * D);
    for (int s = 0; s < 3; ++s) {
      const int64_t t0 = cuts[s], Ts = cuts[s + 1] - t0;
      std::vector<float> hnext(D);
      hgrn_fwd(p.x.data() + t0 * D, p.g.data() + t0 * D, state.data(), o_seg.data() + t0 * D, hnext.data(), B, Ts,
               D, form);
      state = hnext;
    }
    EXPECT_TRUE(all_close(o_seg, o, 1e-6, 1e-6));
    EXPECT_TRUE(all_close(state, ht, 1e-6, 1e-6));
  }
}

TEST(Hgrn, LongSequenceStrongDecayStaysFinite) {
  const int64_t T = 16384, D = 64;
  HgrnProblem p(1, T, D, 1500, -60.f, -5.f);
  for (ScanForm form : {ScanForm::sequential, ScanForm::blelloch}) {
    std::vector<float> o(T * D), ht(D), dx(T * D), dg(T * D), dh0(D);
    hgrn_fwd(p.x.data(), p.g.data(), p.h0.data(), o.data(), ht.data(), 1, T, D, form);
    hgrn_bwd(p.g.data(), o.data(), p.h0.data(), p.dout.data(), p.dht.data(), dx.data(), dg.data(), dh0.data(), 1, T,
             D, form);
    for (auto* v : {&o, &ht, &dx, &dg, &dh0})
      EXPECT_TRUE(std::all_of(v->begin(), v->end(), [](float x) { return std::isfinite(x); }));
    // With decays below e^-5 the state is x_t plus a small correction: compare to the reference.
    auto x = to_f64(p.x), g = to_f64(p.g), h0 = to_f64(p.h0);
    std::vector<double> o64(o.size()), ht64(D);
    ref::hgrn_ref_fwd(x.data(), g.data(), h0.data(), o64.data(), ht64.data(), 1, T, D);
    EXPECT_TRUE(all_close(o, o64, f32_tol(T), f32_tol(T)));
  }
}


// ------------------------------------------------------------------------------------------------
// TTT-Linear

struct TttProblem {
  int64_t B, T, H, D, M;
  std::vector<float> xq, xk, xv, eta, te, gamma, beta, W0, b0, dout, dW, db;
  TttProblem(int64_t B_, int64_t T_, int64_t H_, int64_t D_, int64_t M_, uint64_t seed)
      : B(B_), T(T_), H(H_), D(D_), M(M_) {
    xq = random_floats(B * T * H * D, seed + 1);
    xk = random_floats(B * T * H * D, seed + 2);
    xv = random_floats(B * T * H * D, seed + 3);
    // eta = base_lr * sigmoid(.) / D with base_lr 1 as in TTT-Linear; token_eta = 1/(i+1) + learned offset.
    eta = random_floats(B * T * H, seed + 4, 0.f, 1.f / static_cast<float>(D));
    te = random_floats(M, seed + 5, 0.f, 0.3f);
    for (int64_t i = 0; i < M; ++i) te[i] += 1.f / static_cast<float>(i + 1);
    gamma = random_floats(H * D, seed + 6, 0.5f, 1.5f);
    beta = random_floats(H * D, seed + 7, -0.2f, 0.2f);
    const float w = 1.f / std::sqrt(static_cast<float>(D));
    W0 = random_floats(B * H * D * D, seed + 8, -w, w);
    b0 = random_floats(B * H * D, seed + 9, -0.2f, 0.2f);
    dout = random_floats(B * T * H * D, seed + 10);
    dW = random_floats(B * H * D * D, seed + 11);
    db = random_floats(B * H * D, seed + 12);
  }
  TttLinearInputs inputs(bool default_te = false) const {
    TttLinearInputs in;
    in.xq = xq.data(), in.xk = xk.data(), in.xv = xv.data(), in.eta = eta.data();
    in.token_eta = default_te ? nullptr : te.data();
    in.ln_gamma = gamma.data(), in.ln_beta = beta.data(), in.W0 = W0.data(), in.b0 = b0.data();
    in.B = B, in.T = T, in.H = H, in.D = D, in.mini_batch = M;
    return in;
  }
};

// The f64 copies of a problem's tensors, in a fixed order, so finite differences can walk them.
struct TttProblem64 {
  std::vector<double> xq, xk, xv, eta, te, gamma, beta, W0, b0;
  const TttProblem& p;
  explicit TttProblem64(const TttProblem& p_)
      : xq(to_f64(p_.xq)), xk(to_f64(p_.xk)), xv(to_f64(p_.xv)), eta(to_f64(p_.eta)), te(to_f64(p_.te)),
        gamma(to_f64(p_.gamma)), beta(to_f64(p_.beta)), W0(to_f64(p_.W0)), b0(to_f64(p_.b0)), p(p_) {}
  ref::TttLinearRefInputs inputs() const {
    ref::TttLinearRefInputs in;
    in.xq = xq.data(), in.xk = xk.data(), in.xv = xv.data(), in.eta = eta.data(), in.token_eta = te.data();
    in.ln_gamma = gamma.data(), in.ln_beta = beta.data(), in.W0 = W0.data(), in.b0 = b0.data();
    in.B = p.B, in.T = p.T, in.H = p.H, in.D = p.D, in.mini_batch = p.M;
    return in;
  }
  // L = <out, dout> + <W_T, dW> + <b_T, db> in f64.
  double loss() const {
    std::vector<double> out(p.B * p.T * p.H * p.D), W(p.B * p.H * p.D * p.D), b(p.B * p.H * p.D);
    ref::ttt_linear_ref_fwd(inputs(), out.data(), W.data(), b.data());
    return dot(out, to_f64(p.dout)) + dot(W, to_f64(p.dW)) + dot(b, to_f64(p.db));
  }
};

struct TttGradsF32 {
  std::vector<float> dxq, dxk, dxv, deta, dte, dgamma, dbeta, dW0, db0;
  explicit TttGradsF32(const TttProblem& p)
      : dxq(p.xq.size(), NAN), dxk(p.xk.size(), NAN), dxv(p.xv.size(), NAN), deta(p.eta.size(), NAN),
        dte(p.M, NAN), dgamma(p.gamma.size(), NAN), dbeta(p.beta.size(), NAN), dW0(p.W0.size(), NAN),
        db0(p.b0.size(), NAN) {}
  void run(const TttProblem& p, bool with_state_grads = true) {
    TttLinearGrads g;
    g.dxq = dxq.data(), g.dxk = dxk.data(), g.dxv = dxv.data(), g.deta = deta.data(), g.dtoken_eta = dte.data();
    g.dln_gamma = dgamma.data(), g.dln_beta = dbeta.data(), g.dW0 = dW0.data(), g.db0 = db0.data();
    ttt_linear_bwd(p.inputs(), p.dout.data(), with_state_grads ? p.dW.data() : nullptr,
                   with_state_grads ? p.db.data() : nullptr, g);
  }
};

TEST(TttLinearRef, InnerGradientMatchesFiniteDifferences) {
  // One token: b_T = b0 - token_eta[0] * eta_0 * G_0, so G_0 = (b0 - b_T) / (te eta) must equal the
  // finite-difference gradient of 0.5 || LN(z) - (v - k) ||^2 at z = k W0 + b0. Checks the fused
  // LayerNorm + L2 backward formula that both the reference and the kernel rely on.
  TttProblem p(1, 1, 1, 6, 16, 2000);
  TttProblem64 q(p);
  std::vector<double> out(6), W(36), b(6);
  ref::ttt_linear_ref_fwd(q.inputs(), out.data(), W.data(), b.data());
  std::vector<float> outf(6), Wf(36), bf(6);
  ttt_linear_fwd(p.inputs(), outf.data(), Wf.data(), bf.data());
  const int64_t D = 6;
  std::vector<double> z(D), target(D), G(D), Gf(D);
  for (int64_t c = 0; c < D; ++c) {
    z[c] = q.b0[c];
    for (int64_t a = 0; a < D; ++a) z[c] += q.xk[a] * q.W0[a * D + c];
    target[c] = q.xv[c] - q.xk[c];
    G[c] = (q.b0[c] - b[c]) / (q.te[0] * q.eta[0]);
    Gf[c] = (p.b0[c] - bf[c]) / (p.te[0] * p.eta[0]);
  }
  auto inner_loss = [&]() {
    double mu = 0, var = 0;
    for (double v : z) mu += v / D;
    for (double v : z) var += (v - mu) * (v - mu) / D;
    double l = 0;
    for (int64_t c = 0; c < D; ++c) {
      const double y = q.gamma[c] * (z[c] - mu) / std::sqrt(var + 1e-6) + q.beta[c] - target[c];
      l += 0.5 * y * y;
    }
    return l;
  };
  std::vector<double> fd(D);
  for (int64_t c = 0; c < D; ++c) fd[c] = central_diff(z, c, inner_loss);
  EXPECT_TRUE(all_close(G, fd, 1e-6, 1e-6));
  // fp32 kernel: G recovered from a difference of O(1) numbers divided by te*eta ~ 0.1: ~1e-6/0.1.
  EXPECT_TRUE(all_close(Gf, fd, 2e-5, 2e-5));
}

// fp32 dual form vs f64 primal form, outputs and final state.
void check_ttt_forward(const TttProblem& p, bool default_te) {
  std::vector<float> out(p.xq.size(), NAN), W(p.W0.size(), NAN), b(p.b0.size(), NAN);
  ttt_linear_fwd(p.inputs(default_te), out.data(), W.data(), b.data());
  TttProblem64 q(p);
  if (default_te)
    for (int64_t i = 0; i < p.M; ++i) q.te[i] = 1.0 / (i + 1);
  std::vector<double> out64(out.size()), W64(W.size()), b64(b.size());
  ref::ttt_linear_ref_fwd(q.inputs(), out64.data(), W64.data(), b64.data());
  const double tol = f32_tol(p.T);
  EXPECT_TRUE(all_close(out, out64, tol, tol)) << "out T=" << p.T;
  EXPECT_TRUE(all_close(W, W64, tol, tol)) << "W T=" << p.T;
  EXPECT_TRUE(all_close(b, b64, tol, tol)) << "b T=" << p.T;
}

TEST(TttLinear, DualFormMatchesPrimalReference) {
  for (int64_t T : kLengths) {
    check_ttt_forward(TttProblem(2, T, 2, 16, 16, 2100 + T), false);
    check_ttt_forward(TttProblem(1, T, 1, 8, 16, 2200 + T), true);  // default token_eta = 1/(i+1)
  }
  check_ttt_forward(TttProblem(1, 45, 3, 12, 7, 2300), false);  // odd mini-batch and head dim
}

// Every gradient against central differences of the f64 primal forward, element by element.
TEST(TttLinear, BackwardMatchesFiniteDifferences) {
  for (auto [T, M] : {std::pair<int64_t, int64_t>{13, 5}, {16, 16}, {21, 8}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << T << " M=" << M);
    TttProblem p(2, T, 2, 4, M, 2400 + T);
    TttGradsF32 g(p);
    g.run(p);
    TttProblem64 q(p);
    auto loss = [&]() { return q.loss(); };
    struct Case {
      const char* name;
      std::vector<double>* x;
      const std::vector<float>* grad;
    } cases[] = {{"xq", &q.xq, &g.dxq},          {"xk", &q.xk, &g.dxk},       {"xv", &q.xv, &g.dxv},
                 {"eta", &q.eta, &g.deta},       {"token_eta", &q.te, &g.dte}, {"gamma", &q.gamma, &g.dgamma},
                 {"beta", &q.beta, &g.dbeta},    {"W0", &q.W0, &g.dW0},       {"b0", &q.b0, &g.db0}};
    for (auto& c : cases) {
      std::vector<double> fd(c.x->size());
      for (size_t i = 0; i < fd.size(); ++i) fd[i] = central_diff(*c.x, i, loss);
      // fp32 kernel vs f64: each gradient is a sum of O(T) second-order terms of size O(1) computed
      // with ~1e-7 relative rounding, so 1e-5 (relative to the gradient's scale) leaves a 10-100x margin.
      const double scale = std::max(1.0, max_abs(fd));
      EXPECT_TRUE(all_close(*c.grad, fd, 1e-5 * scale, 1e-5)) << c.name;
    }
  }
}

// Longer sequences: directional derivatives <grad, r> against central differences of the f64
// forward along r, one per input tensor (full finite differences would cost one forward per element).
// D = 20 runs both the 16-wide vector path of the kernel's matrix products and the scalar tail.
TEST(TttLinear, BackwardDirectionalDerivatives) {
  for (int64_t T : kLengths) {
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    TttProblem p(1, T, 2, 20, 16, 2500 + T);
    TttGradsF32 g(p);
    g.run(p);
    TttProblem64 q(p);
    struct Case {
      const char* name;
      std::vector<double>* x;
      const std::vector<float>* grad;
    } cases[] = {{"xq", &q.xq, &g.dxq},          {"xk", &q.xk, &g.dxk},       {"xv", &q.xv, &g.dxv},
                 {"eta", &q.eta, &g.deta},       {"token_eta", &q.te, &g.dte}, {"gamma", &q.gamma, &g.dgamma},
                 {"beta", &q.beta, &g.dbeta},    {"W0", &q.W0, &g.dW0},       {"b0", &q.b0, &g.db0}};
    uint64_t seed = 2600;
    for (auto& c : cases) {
      const std::vector<double> r = to_f64(random_floats(c.x->size(), ++seed));
      const std::vector<double> x0 = *c.x;
      const double h = 1e-6;
      for (size_t i = 0; i < r.size(); ++i) (*c.x)[i] = x0[i] + h * r[i];
      const double lp = q.loss();
      for (size_t i = 0; i < r.size(); ++i) (*c.x)[i] = x0[i] - h * r[i];
      const double lm = q.loss();
      *c.x = x0;
      const double fd = (lp - lm) / (2 * h);
      double got = 0.0, mag = 0.0;
      for (size_t i = 0; i < r.size(); ++i) {
        got += (*c.grad)[i] * r[i];
        mag += std::fabs((*c.grad)[i] * r[i]);
      }
      // The fp32 sum of n terms has error ~ sqrt(n) 1e-7 relative to sum |terms|; each term carries
      // the per-element bound of f32_tol(T).
      EXPECT_NEAR(got, fd, f32_tol(T) * mag + 1e-7 * std::fabs(fd)) << c.name;
    }
  }
}

TEST(TttLinear, StepMatchesForward) {
  const int64_t B = 2, H = 2, D = 8, M = 16;
  for (int64_t T : {int64_t{32}, int64_t{37}}) {
    TttProblem p(B, T, H, D, M, 2700 + T);
    std::vector<float> out(p.xq.size()), Wf(p.W0.size()), bf(p.b0.size());
    ttt_linear_fwd(p.inputs(), out.data(), Wf.data(), bf.data());
    std::vector<float> W = p.W0, b = p.b0, Wg(W.size(), 0.f), bg(b.size(), 0.f);
    std::vector<float> q(B * H * D), k(q.size()), v(q.size()), e(B * H), o(q.size()), out_step(out.size());
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t bb = 0; bb < B; ++bb)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t src = ((bb * T + t) * H + h) * D, dst = (bb * H + h) * D;
          std::copy(p.xq.begin() + src, p.xq.begin() + src + D, q.begin() + dst);
          std::copy(p.xk.begin() + src, p.xk.begin() + src + D, k.begin() + dst);
          std::copy(p.xv.begin() + src, p.xv.begin() + src + D, v.begin() + dst);
          e[bb * H + h] = p.eta[(bb * T + t) * H + h];
        }
      const int64_t pos = t % M;
      ttt_linear_step(q.data(), k.data(), v.data(), e.data(), p.te[pos], p.gamma.data(), p.beta.data(), W.data(),
                      b.data(), Wg.data(), bg.data(), pos == M - 1, o.data(), B, H, D);
      for (int64_t bb = 0; bb < B; ++bb)
        for (int64_t h = 0; h < H; ++h)
          std::copy(o.begin() + (bb * H + h) * D, o.begin() + (bb * H + h + 1) * D,
                    out_step.begin() + ((bb * T + t) * H + h) * D);
    }
    // Primal (step) and dual (forward) forms in fp32: same bound as against the f64 reference.
    const double tol = f32_tol(T);
    EXPECT_TRUE(all_close(out_step, out, tol, tol));
    // The forward's final state is the last token's weights W - te W_grad (a no-op at a boundary).
    const float te_last = p.te[(T - 1) % M];
    for (size_t i = 0; i < W.size(); ++i) W[i] -= te_last * Wg[i];
    for (size_t i = 0; i < b.size(); ++i) b[i] -= te_last * bg[i];
    EXPECT_TRUE(all_close(W, Wf, tol, tol));
    EXPECT_TRUE(all_close(b, bf, tol, tol));
  }
}

TEST(TttLinear, ThreeSegmentsAtMiniBatchBoundariesEqualOnePass) {
  const int64_t B = 1, H = 2, D = 8, M = 8, T = 72;
  const int64_t cuts[] = {0, 24, 32, 72};
  TttProblem p(B, T, H, D, M, 2800);
  std::vector<float> out(p.xq.size()), W(p.W0.size()), b(p.b0.size());
  ttt_linear_fwd(p.inputs(), out.data(), W.data(), b.data());
  TttGradsF32 g_full(p);
  g_full.run(p);
  auto slice = [&](const std::vector<float>& x, int64_t X, int64_t t0, int64_t t1) {
    return std::vector<float>(x.begin() + t0 * X, x.begin() + t1 * X);  // B = 1
  };
  std::vector<TttProblem> segs;
  std::vector<float> out_seg(out.size());
  std::vector<float> Wc = p.W0, bc = p.b0;
  for (int s = 0; s < 3; ++s) {
    TttProblem seg = p;
    const int64_t t0 = cuts[s], t1 = cuts[s + 1];
    seg.T = t1 - t0;
    seg.xq = slice(p.xq, H * D, t0, t1), seg.xk = slice(p.xk, H * D, t0, t1), seg.xv = slice(p.xv, H * D, t0, t1);
    seg.eta = slice(p.eta, H, t0, t1), seg.dout = slice(p.dout, H * D, t0, t1);
    seg.W0 = Wc, seg.b0 = bc;
    std::vector<float> o(seg.xq.size());
    ttt_linear_fwd(seg.inputs(), o.data(), Wc.data(), bc.data());
    std::copy(o.begin(), o.end(), out_seg.begin() + t0 * H * D);
    segs.push_back(seg);
  }
  EXPECT_TRUE(all_close(out_seg, out, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(Wc, W, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(bc, b, 1e-6, 1e-6));
  // Backward in reverse, each segment's dW0/db0 feeding the previous one's final-state gradient.
  std::vector<float> dW = p.dW, db = p.db, dxk(p.xk.size()), dgamma(H * D, 0.f);
  for (int s = 2; s >= 0; --s) {
    segs[s].dW = dW, segs[s].db = db;
    TttGradsF32 g(segs[s]);
    g.run(segs[s]);
    std::copy(g.dxk.begin(), g.dxk.end(), dxk.begin() + cuts[s] * H * D);
    for (int64_t i = 0; i < H * D; ++i) dgamma[i] += g.dgamma[i];
    dW = g.dW0, db = g.db0;
  }
  EXPECT_TRUE(all_close(dxk, g_full.dxk, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(dW, g_full.dW0, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(db, g_full.db0, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(dgamma, g_full.dgamma, 1e-4, 1e-5));  // sums of 72 tokens in different orders
}

TEST(TttLinear, LongSequenceStaysFinite) {
  const int64_t T = 16384;
  TttProblem p(1, T, 1, 16, 16, 2900);
  for (auto& e : p.eta) e *= 4.f;  // aggressive inner learning rate: up to 4/D
  std::vector<float> out(p.xq.size()), W(p.W0.size()), b(p.b0.size());
  ttt_linear_fwd(p.inputs(), out.data(), W.data(), b.data());
  for (auto* v : {&out, &W, &b}) EXPECT_TRUE(std::all_of(v->begin(), v->end(), [](float x) { return std::isfinite(x); }));
  TttProblem64 q(p);
  std::vector<double> out64(out.size()), W64(W.size()), b64(b.size());
  ref::ttt_linear_ref_fwd(q.inputs(), out64.data(), W64.data(), b64.data());
  const double tol = f32_tol(T);
  EXPECT_TRUE(all_close(out, out64, tol, tol));
  TttGradsF32 g(p);
  g.run(p);
  for (auto* v : {&g.dxq, &g.dxk, &g.dxv, &g.deta, &g.dW0, &g.dgamma})
    EXPECT_TRUE(std::all_of(v->begin(), v->end(), [](float x) { return std::isfinite(x); }));
}

}  // namespace
}  // namespace sw::kernels::scan
