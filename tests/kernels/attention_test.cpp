// Attention kernels vs the f64 explicit-mask reference (kernels/ref/attention_ref.h).
//
// Tolerances. Inputs are uniform in [-1, 1), so logits are O(1) and outputs are convex
// combinations of values in [-1, 1]. An fp32 kernel differs from f64 by rounding in the Dk-term
// dot products (~sqrt(Dk) * 6e-8 relative), the polynomial exp2 (2e-7 relative) and the Tk-term
// softmax sums (~sqrt(Tk) * 6e-8); for the lengths used here (<= 600) that is a few 1e-7
// absolute on o and lse. kFwdAtol = 1e-5 leaves a ~10x margin over sqrt(Tk) * 1e-7 scaling while
// still catching any masking or rescaling bug (those produce O(1e-2..1) errors). Gradients are
// sums over up to Tq rows of such terms and grow with T (dv of an early key sums p over all
// rows), so they get atol 2e-5 plus rtol 1e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention/attention_params.h"
#include "kernels/attention/flash_attention.h"
#include "kernels/ref/attention_ref.h"
#include "testing.h"

namespace sw::kernels::attention {
namespace {

using sw::testing::all_close;
using sw::testing::random_floats;
using sw::testing::to_f64;

constexpr double kFwdAtol = 1e-5;
constexpr double kGradAtol = 2e-5;
constexpr double kGradRtol = 1e-4;

size_t numel_q(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tq * d.Hq * d.Dk; }
size_t numel_k(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dk; }
size_t numel_v(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dv; }
size_t numel_o(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tq * d.Hq * d.Dv; }
size_t numel_lse(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Hq * d.Tq; }

// Random CSR block layout (each pair kept with probability `density`); query blocks listed in
// `empty_rows` get no key block at all.
struct Layout {
  std::vector<int32_t> row_ptr, col_idx;
  BlockLayout view(int bq, int bk, int n_layouts) const {
    return BlockLayout{bq, bk, n_layouts, row_ptr.data(), col_idx.data()};
  }
};

Layout random_layout(int n_layouts, int n_qblocks, int n_kblocks, double density, uint64_t seed,
                     std::vector<int> empty_rows = {}) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution keep(density);
  Layout L;
  for (int l = 0; l < n_layouts; ++l) {
    L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
    for (int qb = 0; qb < n_qblocks; ++qb) {
      const bool empty = std::find(empty_rows.begin(), empty_rows.end(), qb) != empty_rows.end();
      for (int kb = 0; kb < n_kblocks; ++kb)
        if (!empty && keep(rng)) L.col_idx.push_back(kb);
      L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
    }
  }
  return L;
}

struct Case {
  std::string name;
  AttentionDims d;
  AttentionParams p;
  bool learned_sink = false;
  int bq = 0, bk = 0, n_layouts = 0;  // block layout when bq > 0
  double density = 0.6;
  std::vector<int> empty_qblocks;
};

std::string describe(const Case& c) {
  return c.name + " B=" + std::to_string(c.d.B) + " Tq=" + std::to_string(c.d.Tq) + " Tk=" + std::to_string(c.d.Tk) +
         " Hq=" + std::to_string(c.d.Hq) + " Hkv=" + std::to_string(c.d.Hkv) + " Dk=" + std::to_string(c.d.Dk) +
         " Dv=" + std::to_string(c.d.Dv);
}

// Runs forward and backward of kernel and reference on random data and compares everything.
void check_case(Case c, uint64_t seed) {
  SCOPED_TRACE(describe(c));
  const AttentionDims& d = c.d;
  std::vector<float> q = random_floats(numel_q(d), seed), k = random_floats(numel_k(d), seed + 1),
                     v = random_floats(numel_v(d), seed + 2), dout = random_floats(numel_o(d), seed + 3),
                     dlse = random_floats(numel_lse(d), seed + 4), sink = random_floats(d.Hq, seed + 5, -1.f, 2.f);
  Layout layout;
  if (c.bq > 0) {
    layout = random_layout(c.n_layouts, (d.Tq + c.bq - 1) / c.bq, (d.Tk + c.bk - 1) / c.bk, c.density, seed + 6,
                           c.empty_qblocks);
    c.p.layout = layout.view(c.bq, c.bk, c.n_layouts);
  }
  c.p.sink_logits = c.learned_sink ? sink.data() : nullptr;

  std::vector<float> o(numel_o(d), NAN), lse(numel_lse(d), NAN);
  flash_attention_forward(q.data(), k.data(), v.data(), d, c.p, o.data(), lse.data());

  std::vector<double> q64 = to_f64(q), k64 = to_f64(k), v64 = to_f64(v), sink64 = to_f64(sink);
  std::vector<double> o_ref(numel_o(d)), lse_ref(numel_lse(d));
  const double* sink_ref = c.learned_sink ? sink64.data() : nullptr;
  ref::attention_forward_ref(q64.data(), k64.data(), v64.data(), sink_ref, d, c.p, o_ref.data(), lse_ref.data());
  EXPECT_TRUE(all_close(o, o_ref, kFwdAtol, 0)) << "o";
  EXPECT_TRUE(all_close(lse, lse_ref, kFwdAtol, 0)) << "lse";

  std::vector<float> dq(numel_q(d), NAN), dk(numel_k(d), NAN), dv(numel_v(d), NAN), dsink(d.Hq, NAN);
  flash_attention_backward(q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(), dlse.data(), d, c.p,
                           dq.data(), dk.data(), dv.data(), dsink.data());
  std::vector<double> dq_ref(dq.size()), dk_ref(dk.size()), dv_ref(dv.size()), dsink_ref(d.Hq);
  std::vector<double> dout64 = to_f64(dout), dlse64 = to_f64(dlse);
  ref::attention_backward_ref(q64.data(), k64.data(), v64.data(), sink_ref, dout64.data(), dlse64.data(), d, c.p,
                              dq_ref.data(), dk_ref.data(), dv_ref.data(), dsink_ref.data());
  EXPECT_TRUE(all_close(dq, dq_ref, kGradAtol, kGradRtol)) << "dq";
  EXPECT_TRUE(all_close(dk, dk_ref, kGradAtol, kGradRtol)) << "dk";
  EXPECT_TRUE(all_close(dv, dv_ref, kGradAtol, kGradRtol)) << "dv";
  if (c.learned_sink) {
    // dsink sums B * Tq terms of size O(1): allow the per-term tolerance times sqrt(terms).
    const double atol = kGradAtol * std::sqrt(static_cast<double>(d.B) * d.Tq);
    EXPECT_TRUE(all_close(dsink, dsink_ref, atol, kGradRtol)) << "dsink";
  }
}

AttentionDims dims(int B, int Tq, int Tk, int Hq, int Hkv, int Dk, int Dv) { return {B, Tq, Tk, Hq, Hkv, Dk, Dv}; }

Case causal_case(std::string name, AttentionDims d) {
  Case c;
  c.name = std::move(name);
  c.d = d;
  return c;
}

TEST(FlashAttention, CausalTailNotMultipleOfTile) { check_case(causal_case("causal", dims(2, 100, 100, 2, 2, 64, 64)), 1); }

TEST(FlashAttention, SingleToken) { check_case(causal_case("T=1", dims(1, 1, 1, 2, 1, 64, 64)), 2); }

TEST(FlashAttention, GqaRatios) {
  for (int ratio : {1, 2, 4, 8}) check_case(causal_case("gqa" + std::to_string(ratio), dims(1, 77, 77, 8, 8 / ratio, 32, 32)), 10 + ratio);
}

TEST(FlashAttention, HeadDims) {
  check_case(causal_case("d128", dims(1, 130, 130, 2, 1, 128, 128)), 20);
  check_case(causal_case("mla dk192 dv128", dims(1, 70, 70, 2, 2, 192, 128)), 21);
  check_case(causal_case("odd dims", dims(1, 65, 65, 3, 1, 13, 7)), 22);
}

TEST(FlashAttention, SlidingWindowAndSinks) {
  Case c = causal_case("window", dims(1, 200, 200, 2, 1, 32, 32));
  c.p.window = 37;
  check_case(c, 30);
  c.name = "window+sinks";
  c.p.n_sink = 4;
  check_case(c, 31);
  c.name = "window+sinks wide";
  c.p.window = 70;
  c.p.n_sink = 70;  // sink range straddles a tile boundary
  check_case(c, 32);
}

TEST(FlashAttention, LearnedSinks) {
  Case c = causal_case("learned sink", dims(2, 90, 90, 4, 2, 32, 16));
  c.learned_sink = true;
  check_case(c, 40);
  c.name = "learned sink + window + sinks";
  c.p.window = 20;
  c.p.n_sink = 2;
  check_case(c, 41);
}

TEST(FlashAttention, Bidirectional) {
  Case c = causal_case("bidirectional", dims(2, 90, 150, 4, 2, 32, 32));
  c.p.causal = false;
  check_case(c, 50);
  c.name = "bidirectional window + sinks";
  c.p.window = 30;
  c.p.n_sink = 3;
  check_case(c, 51);
}

TEST(FlashAttention, QueryOffset) {
  // Chunked prefill: 70 new queries at positions 80..149 over a cache of 150 keys.
  Case c = causal_case("q_offset", dims(1, 70, 150, 4, 1, 32, 32));
  c.p.q_offset = 80;
  check_case(c, 60);
  c.name = "q_offset + window";
  c.p.window = 50;
  c.p.n_sink = 5;
  check_case(c, 61);
}

TEST(FlashAttention, BlockSparseLayouts) {
  Case c = causal_case("layout per head", dims(1, 150, 150, 4, 2, 32, 32));
  c.bq = 32;
  c.bk = 16;
  c.n_layouts = 4;
  check_case(c, 70);
  c.name = "layout shared bidirectional, blocks larger than a tile";
  c.p.causal = false;
  c.bq = 100;
  c.bk = 80;
  c.n_layouts = 1;
  check_case(c, 71);
  c.name = "layout per (b, h) + window + learned sink";
  c.d = dims(2, 120, 120, 2, 2, 16, 16);
  c.p.causal = true;
  c.p.window = 40;
  c.learned_sink = true;
  c.bq = 24;
  c.bk = 40;
  c.n_layouts = 4;
  check_case(c, 72);
}

TEST(FlashAttention, EmptyRowsGiveZeroAndFiniteLse) {
  // Query block 1 has no key blocks: its rows see nothing; the rest is a normal layout.
  Case c = causal_case("empty rows", dims(1, 96, 96, 2, 1, 16, 16));
  c.bq = 32;
  c.bk = 32;
  c.n_layouts = 1;
  c.density = 1.0;
  c.empty_qblocks = {1};
  check_case(c, 80);

  // All rows empty: the window lies entirely beyond the available keys.
  AttentionDims d = dims(1, 10, 20, 1, 1, 8, 8);
  AttentionParams p;
  p.q_offset = 50;
  p.window = 8;
  std::vector<float> q = random_floats(numel_q(d), 81), k = random_floats(numel_k(d), 82),
                     v = random_floats(numel_v(d), 83), o(numel_o(d), NAN), lse(numel_lse(d), NAN);
  flash_attention_forward(q.data(), k.data(), v.data(), d, p, o.data(), lse.data());
  for (float x : o) EXPECT_EQ(x, 0.f);
  for (float x : lse) EXPECT_TRUE(std::isfinite(x));
  std::vector<float> dout = random_floats(numel_o(d), 84), dq(numel_q(d), NAN), dk(numel_k(d), NAN), dv(numel_v(d), NAN);
  flash_attention_backward(q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(), nullptr, d, p, dq.data(),
                           dk.data(), dv.data(), nullptr);
  for (float x : dq) EXPECT_EQ(x, 0.f);
  for (float x : dk) EXPECT_EQ(x, 0.f);
  for (float x : dv) EXPECT_EQ(x, 0.f);
}

TEST(FlashAttention, ModerateAgreement) {
  check_case(causal_case("moderate causal", dims(1, 600, 600, 2, 1, 64, 64)), 90);
  Case c = causal_case("moderate bidirectional", dims(1, 300, 500, 2, 2, 64, 64));
  c.p.causal = false;
  check_case(c, 91);
}

// The f64 reference backward is itself checked against central finite differences of the f64
// forward on a tiny shape, through L = sum(w * o) + sum(u * lse). Step 1e-5: truncation error
// ~h^2 * |f'''| ~ 1e-10 and cancellation ~1e-16 / h ~ 1e-11, so agreement to 1e-7 is a real check.
void finite_difference_check(AttentionParams p, AttentionDims d, bool learned_sink, uint64_t seed) {
  std::vector<double> q = to_f64(random_floats(numel_q(d), seed)), k = to_f64(random_floats(numel_k(d), seed + 1)),
                      v = to_f64(random_floats(numel_v(d), seed + 2)), w = to_f64(random_floats(numel_o(d), seed + 3)),
                      u = to_f64(random_floats(numel_lse(d), seed + 4)),
                      sink = to_f64(random_floats(d.Hq, seed + 5));
  const double* sink_ptr = learned_sink ? sink.data() : nullptr;
  auto loss = [&]() {
    std::vector<double> o(numel_o(d)), lse(numel_lse(d));
    ref::attention_forward_ref(q.data(), k.data(), v.data(), sink_ptr, d, p, o.data(), lse.data());
    double s = 0;
    for (size_t i = 0; i < o.size(); ++i) s += w[i] * o[i];
    for (size_t i = 0; i < lse.size(); ++i)
      if (lse[i] != kEmptyRowLse) s += u[i] * lse[i];
    return s;
  };
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size()), dsink(d.Hq);
  ref::attention_backward_ref(q.data(), k.data(), v.data(), sink_ptr, w.data(), u.data(), d, p, dq.data(), dk.data(),
                              dv.data(), dsink.data());
  const double h = 1e-5;
  auto check = [&](std::vector<double>& x, const std::vector<double>& grad, const char* what) {
    for (size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + h;
      const double fp = loss();
      x[i] = x0 - h;
      const double fm = loss();
      x[i] = x0;
      EXPECT_NEAR(grad[i], (fp - fm) / (2 * h), 1e-7) << what << "[" << i << "]";
    }
  };
  check(q, dq, "dq");
  check(k, dk, "dk");
  check(v, dv, "dv");
  if (learned_sink) check(sink, dsink, "dsink");
}

TEST(AttentionRef, BackwardMatchesFiniteDifferences) {
  AttentionParams p;
  p.q_offset = 2;
  p.window = 3;
  p.n_sink = 1;
  finite_difference_check(p, dims(1, 5, 7, 2, 1, 3, 2), true, 100);
  AttentionParams bidir;
  bidir.causal = false;
  bidir.window = 2;
  finite_difference_check(bidir, dims(2, 4, 5, 2, 2, 3, 3), false, 101);
}

}  // namespace
}  // namespace sw::kernels::attention
