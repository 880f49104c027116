// SageAttention int8 paths: every implementation of the int8 x int8 products (scalar, AVX2,
// AVX512-VNNI where the CPU has it) must give the same outputs bit for bit, because each computes
// the same exact integer dot products and shares the rest of the kernel. Cases cover causal and
// bidirectional masks, sliding windows, sink tokens, learned sink logits, GQA/MQA, q_offset, block
// layouts, lengths that are not multiples of the 64-token tiles and head dims that are not
// multiples of 4 (or of the AVX2 split between int8 and float dimensions). The accuracy of the
// method itself (vs exact attention and vs an f64 emulation of its quantisation) is tested in
// attention_test.cpp, section "SageAttention"; here each case is also checked against the f64
// reference with the accuracy criteria used there (uniform inputs: cosine >= 0.999, relative L1 <=
// 1e-2, |lse error| <= 0.05).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/attention/attention_params.h"
#include "kernels/attention/sage_attention.h"
#include "kernels/ref/attention_ref.h"
#include "testing.h"

namespace sw::kernels::attention {
namespace {

using sw::testing::random_floats;
using sw::testing::to_f64;

struct SageCase {
  std::string name;
  AttentionDims d;
  AttentionParams p;
  bool learned_sink = false;
  int bq = 0, bk = 0;  // block layout (one per query head) when bq > 0
};

AttentionDims dims(int B, int Tq, int Tk, int Hq, int Hkv, int Dk, int Dv) { return {B, Tq, Tk, Hq, Hkv, Dk, Dv}; }

std::vector<SageCase> cases() {
  std::vector<SageCase> c;
  c.push_back({"causal T=200 MHA D=64", dims(1, 200, 200, 2, 2, 64, 64), {}});
  c.push_back({"causal T=130 GQA 4/2 D=64", dims(2, 130, 130, 4, 2, 64, 64), {}});
  c.push_back({"causal T=65 MQA 3/1 D=32", dims(1, 65, 65, 3, 1, 32, 40), {}});
  {
    SageCase s{"window 50 + 3 sinks, T=190, GQA", dims(1, 190, 190, 4, 2, 64, 64), {}};
    s.p.window = 50;
    s.p.n_sink = 3;
    c.push_back(s);
  }
  {
    SageCase s{"learned sink + window, q_offset 40, Tq=100 Tk=140", dims(1, 100, 140, 2, 1, 48, 48), {}};
    s.p.window = 70;
    s.p.q_offset = 40;
    s.learned_sink = true;
    c.push_back(s);
  }
  {
    SageCase s{"bidirectional T=77 D=13 (not a multiple of 4)", dims(1, 77, 77, 2, 1, 13, 9), {}};
    s.p.causal = false;
    c.push_back(s);
  }
  {
    SageCase s{"bidirectional window, D=36, Tq=70 Tk=150", dims(1, 70, 150, 2, 2, 36, 20), {}};
    s.p.causal = false;
    s.p.window = 40;
    c.push_back(s);
  }
  {
    SageCase s{"block layout 32x16, T=160", dims(1, 160, 160, 2, 1, 64, 64), {}};
    s.bq = 32;
    s.bk = 16;
    c.push_back(s);
  }
  c.push_back({"single token", dims(1, 1, 1, 1, 1, 64, 64), {}});
  c.push_back({"D=128", dims(1, 100, 100, 2, 1, 128, 64), {}});
  return c;
}

// A random CSR layout, one per query head, about 70% of the blocks kept (diagonal blocks always,
// so that every causal row sees something).
struct Layout {
  std::vector<int32_t> row_ptr, col_idx;
};
Layout make_layout(int n_layouts, int n_qblocks, int n_kblocks, int bq, int bk, uint64_t seed) {
  std::vector<float> u = random_floats(static_cast<size_t>(n_layouts) * n_qblocks * n_kblocks, seed, 0.f, 1.f);
  Layout L;
  size_t i = 0;
  for (int l = 0; l < n_layouts; ++l) {
    L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
    for (int qb = 0; qb < n_qblocks; ++qb) {
      for (int kb = 0; kb < n_kblocks; ++kb, ++i) {
        const bool diag = kb * bk <= qb * bq + bq - 1 && qb * bq < (kb + 1) * bk;
        if (diag || u[i] < 0.7f) L.col_idx.push_back(kb);
      }
      L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
    }
  }
  return L;
}

struct SageRun {
  std::vector<float> o, lse;
};

struct Inputs {
  std::vector<float> q, k, v, sink;
  Layout layout;
  AttentionParams p;
};

Inputs make_inputs(const SageCase& c, uint64_t seed) {
  const AttentionDims& d = c.d;
  Inputs in;
  in.q = random_floats(static_cast<size_t>(d.B) * d.Tq * d.Hq * d.Dk, seed);
  in.k = random_floats(static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dk, seed + 1);
  in.v = random_floats(static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dv, seed + 2);
  for (size_t r = 0; r < in.k.size() / d.Dk; ++r) in.k[r * d.Dk] += 2.f;  // a biased channel (smoothing at work)
  in.sink = random_floats(d.Hq, seed + 3);
  in.p = c.p;
  if (c.learned_sink) in.p.sink_logits = in.sink.data();
  if (c.bq > 0) {
    in.layout = make_layout(d.Hq, (d.Tq + c.bq - 1) / c.bq, (d.Tk + c.bk - 1) / c.bk, c.bq, c.bk, seed + 4);
    in.p.layout = BlockLayout{c.bq, c.bk, d.Hq, in.layout.row_ptr.data(), in.layout.col_idx.data()};
  }
  return in;
}

SageRun run(const SageCase& c, const Inputs& in, SageIsa isa, bool smooth = true) {
  const AttentionDims& d = c.d;
  SageRun r;
  r.o.assign(static_cast<size_t>(d.B) * d.Tq * d.Hq * d.Dv, NAN);
  r.lse.assign(static_cast<size_t>(d.B) * d.Hq * d.Tq, NAN);
  sage_attention_forward(in.q.data(), in.k.data(), in.v.data(), d, in.p, smooth, r.o.data(), r.lse.data(), isa);
  return r;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<SageIsa> fast_paths() {
  std::vector<SageIsa> v;
  for (SageIsa isa : {SageIsa::kAvx2, SageIsa::kAvx512Vnni})
    if (sage_isa_supported(isa)) v.push_back(isa);
  return v;
}

TEST(SageAttentionPaths, WhichPathsRun) {
  EXPECT_TRUE(sage_isa_supported(SageIsa::kScalar));
  const SageIsa best = sage_resolve_isa(SageIsa::kAuto);
  EXPECT_NE(best, SageIsa::kAuto);
  EXPECT_TRUE(sage_isa_supported(best));
  std::printf("[ SAGE     ] int8 paths here: scalar%s%s; auto = %s\n",
              sage_isa_supported(SageIsa::kAvx2) ? ", avx2" : "",
              sage_isa_supported(SageIsa::kAvx512Vnni) ? ", avx512vnni" : " (avx512vnni: not on this CPU, untested)",
              sage_isa_name(best));
#if defined(__AVX2__)
  EXPECT_TRUE(sage_isa_supported(SageIsa::kAvx2)) << "an AVX2 build must offer the AVX2 path";
#endif
}

TEST(SageAttentionPaths, UnsupportedPathIsAnError) {
  for (SageIsa isa : {SageIsa::kAvx2, SageIsa::kAvx512Vnni}) {
    if (sage_isa_supported(isa)) continue;
    SageCase c{"tiny", dims(1, 4, 4, 1, 1, 8, 8), {}};
    Inputs in = make_inputs(c, 1);
    EXPECT_THROW(run(c, in, isa), sw::Error) << sage_isa_name(isa);
  }
}

TEST(SageAttentionPaths, FastPathsEqualScalarBitForBit) {
  const std::vector<SageIsa> fast = fast_paths();
  if (fast.empty()) GTEST_SKIP() << "no int8 SIMD path in this build/CPU";
  uint64_t seed = 900;
  for (const SageCase& c : cases()) {
    const Inputs in = make_inputs(c, seed += 10);
    for (bool smooth : {true, false}) {
      const SageRun ref = run(c, in, SageIsa::kScalar, smooth);
      for (SageIsa isa : fast) {
        const SageRun got = run(c, in, isa, smooth);
        EXPECT_TRUE(bit_equal(got.o, ref.o)) << c.name << ": o differs, path " << sage_isa_name(isa);
        EXPECT_TRUE(bit_equal(got.lse, ref.lse)) << c.name << ": lse differs, path " << sage_isa_name(isa);
      }
    }
    // kAuto is one of them.
    EXPECT_TRUE(bit_equal(run(c, in, SageIsa::kAuto).o, run(c, in, SageIsa::kScalar).o)) << c.name;
  }
}

TEST(SageAttentionPaths, EveryCaseIsAccurate) {
  uint64_t seed = 900;
  for (const SageCase& c : cases()) {
    const Inputs in = make_inputs(c, seed += 10);
    const SageRun r = run(c, in, SageIsa::kAuto);
    const AttentionDims& d = c.d;
    std::vector<double> q = to_f64(in.q), k = to_f64(in.k), v = to_f64(in.v), sink = to_f64(in.sink);
    std::vector<double> o_ref(r.o.size()), lse_ref(r.lse.size());
    ref::attention_forward_ref(q.data(), k.data(), v.data(), c.learned_sink ? sink.data() : nullptr, d, in.p,
                               o_ref.data(), lse_ref.data());
    double dot = 0, na = 0, nb = 0, l1 = 0, l1_ref = 0, lmx = 0;
    for (size_t i = 0; i < r.o.size(); ++i) {
      ASSERT_TRUE(std::isfinite(r.o[i])) << c.name;
      dot += r.o[i] * o_ref[i];
      na += static_cast<double>(r.o[i]) * r.o[i];
      nb += o_ref[i] * o_ref[i];
      l1 += std::fabs(r.o[i] - o_ref[i]);
      l1_ref += std::fabs(o_ref[i]);
    }
    for (size_t i = 0; i < r.lse.size(); ++i) lmx = std::max(lmx, std::fabs(r.lse[i] - lse_ref[i]));
    const double cosine = nb > 0 ? dot / std::sqrt(na * nb) : 1.0;
    EXPECT_GE(cosine, 0.999) << c.name;
    EXPECT_LE(l1_ref > 0 ? l1 / l1_ref : 0.0, 1e-2) << c.name;
    EXPECT_LE(lmx, 0.05) << c.name;
  }
}

}  // namespace
}  // namespace sw::kernels::attention
