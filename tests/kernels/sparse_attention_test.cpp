// Sparse attention (issue 12): static block patterns (nn/attention/block_layout.h) and MoBA's
// dynamic block selection (nn/attention/moba.h), each run through the one tiled kernel with its
// block layout, against f64 dense attention under the explicit token mask the method implies.
//
// The explicit mask is written here from the rule (a per-(query block, key block) predicate, or
// MoBA's top-k written as a full sort in f64), expanded to a token-level mask (a 1 x 1 block layout,
// i.e. one entry per visible (query, key) pair, which ref::attention_mask_ref reads as the mask),
// and never from the code under test.
//
// Tolerances (as tests/kernels/attention_test.cpp, same kernel, same input ranges, T <= 96): inputs
// uniform in [-1, 1), the fp32 kernel differs from f64 by rounding in the Dk-term dots, the
// polynomial exp2 (7e-8 relative) and the softmax sums: a few 1e-7 on o and lse, so atol 1e-5 (>10x
// margin; a wrong mask gives errors of 1e-2..1). Gradients sum up to Tq such terms: atol 2e-5 plus
// rtol 1e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "kernels/attention/flash_attention.h"
#include "kernels/ref/attention_ref.h"
#include "nn/attention/block_layout.h"
#include "nn/attention/moba.h"
#include "testing.h"

namespace sw {
namespace {

using kernels::attention::AttentionDims;
using kernels::attention::AttentionParams;
using kernels::attention::BlockLayout;
using nn::BuiltLayout;
using nn::PatternKind;
using nn::SparsePattern;
using testing::all_close;
using testing::random_floats;
using testing::to_f64;

constexpr double kFwdAtol = 1e-5;
constexpr double kGradAtol = 2e-5;
constexpr double kGradRtol = 1e-4;

// Token-level visibility: vis(layout index, query row i, key j).
using TokenRule = std::function<bool(int, int64_t, int64_t)>;

struct TokenMask {
  std::vector<int32_t> row_ptr, col_idx;
  BlockLayout view;
};

TokenMask token_mask(int n_layouts, int64_t Tq, int64_t Tk, const TokenRule& vis) {
  TokenMask m;
  for (int l = 0; l < n_layouts; ++l) {
    m.row_ptr.push_back(static_cast<int32_t>(m.col_idx.size()));
    for (int64_t i = 0; i < Tq; ++i) {
      for (int64_t j = 0; j < Tk; ++j)
        if (vis(l, i, j)) m.col_idx.push_back(static_cast<int32_t>(j));
      m.row_ptr.push_back(static_cast<int32_t>(m.col_idx.size()));
    }
  }
  m.view = BlockLayout{1, 1, n_layouts, m.row_ptr.data(), m.col_idx.data()};
  return m;
}

size_t nq(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tq * d.Hq * d.Dk; }
size_t nk(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dk; }
size_t nv(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dv; }
size_t no(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Tq * d.Hq * d.Dv; }
size_t nl(const AttentionDims& d) { return static_cast<size_t>(d.B) * d.Hq * d.Tq; }

// Kernel (with `kernel_layout`) forward and backward vs the f64 reference under `mask` (causal as well).
void check_against_mask(const AttentionDims& d, int64_t q_offset, const BlockLayout& kernel_layout,
                        const BlockLayout& mask, const std::vector<float>& q, const std::vector<float>& k,
                        const std::vector<float>& v, uint64_t seed) {
  std::vector<float> dout = random_floats(no(d), seed + 3), dlse = random_floats(nl(d), seed + 4);
  AttentionParams p;
  p.q_offset = q_offset;
  p.layout = kernel_layout;
  std::vector<float> o(no(d), NAN), lse(nl(d), NAN);
  kernels::attention::flash_attention_forward(q.data(), k.data(), v.data(), d, p, o.data(), lse.data());
  AttentionParams pr;
  pr.q_offset = q_offset;
  pr.layout = mask;
  std::vector<double> q64 = to_f64(q), k64 = to_f64(k), v64 = to_f64(v);
  std::vector<double> o_ref(no(d)), lse_ref(nl(d));
  kernels::ref::attention_forward_ref(q64.data(), k64.data(), v64.data(), nullptr, d, pr, o_ref.data(), lse_ref.data());
  EXPECT_TRUE(all_close(o, o_ref, kFwdAtol, 0)) << "o";
  EXPECT_TRUE(all_close(lse, lse_ref, kFwdAtol, 0)) << "lse";
  std::vector<float> dq(nq(d), NAN), dk(nk(d), NAN), dv(nv(d), NAN);
  kernels::attention::flash_attention_backward(q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(),
                                               dlse.data(), d, p, dq.data(), dk.data(), dv.data(), nullptr);
  std::vector<double> dq_ref(dq.size()), dk_ref(dk.size()), dv_ref(dv.size());
  std::vector<double> dout64 = to_f64(dout), dlse64 = to_f64(dlse);
  kernels::ref::attention_backward_ref(q64.data(), k64.data(), v64.data(), nullptr, dout64.data(), dlse64.data(), d,
                                       pr, dq_ref.data(), dk_ref.data(), dv_ref.data(), nullptr);
  EXPECT_TRUE(all_close(dq, dq_ref, kGradAtol, kGradRtol)) << "dq";
  EXPECT_TRUE(all_close(dk, dk_ref, kGradAtol, kGradRtol)) << "dk";
  EXPECT_TRUE(all_close(dv, dv_ref, kGradAtol, kGradRtol)) << "dv";
}

// ---- static patterns ----

struct NamedPattern {
  std::string name;
  SparsePattern p;
};

std::vector<NamedPattern> patterns() {
  std::vector<NamedPattern> out;
  SparsePattern blocks(8, 2, 1, 3);
  out.push_back({"blocks", blocks});
  SparsePattern lf(8, 3, 2, 0);
  lf.kind = PatternKind::longformer;
  out.push_back({"longformer", lf});
  SparsePattern bb(8, 2, 1, 0);
  bb.kind = PatternKind::bigbird;
  bb.random = 2;
  bb.seed = 1234;
  out.push_back({"bigbird", bb});
  SparsePattern dil(8);
  dil.kind = PatternKind::dilated;
  dil.segments = {2, 4, 16};
  dil.dilations = {1, 2, 4};
  out.push_back({"dilated", dil});
  SparsePattern st(8, 1, 0, 3);
  st.kind = PatternKind::strided;
  out.push_back({"strided", st});
  SparsePattern fx(8, 1, 0, 4);
  fx.kind = PatternKind::fixed;
  fx.summary = 1;
  out.push_back({"fixed", fx});
  return out;
}

// The rules of block_layout.h written out directly (bigbird's random part read from random_blocks,
// which RandomBlocks checks on its own).
bool direct_rule(const SparsePattern& p, int64_t head, int64_t qb, int64_t kb) {
  if (kb > qb) return false;
  const int64_t back = qb - kb;
  switch (p.kind) {
    case PatternKind::blocks:
      return back < p.local || kb < p.global || (p.stride > 0 && back % p.stride == 0);
    case PatternKind::longformer:
      return back < p.local || kb < p.global || qb < p.global;
    case PatternKind::bigbird: {
      const std::vector<int64_t> r = p.random_blocks(qb, head);
      return back < p.local || kb < p.global || std::find(r.begin(), r.end(), kb) != r.end();
    }
    case PatternKind::dilated: {
      bool any = false;
      for (size_t i = 0; i < p.segments.size(); ++i)
        any = any || (qb / p.segments[i] == kb / p.segments[i] && back % p.dilations[i] == 0);
      return any;
    }
    case PatternKind::strided:
      return back < p.stride || back % p.stride == 0;
    case PatternKind::fixed:
      return qb / p.stride == kb / p.stride || kb % p.stride >= p.stride - p.summary;
  }
  return false;
}

TEST(SparsePatterns, LayoutsMatchTheRule) {
  const int64_t H = 3;
  for (const NamedPattern& np : patterns()) {
    for (int64_t q_offset : {0, 16, 13}) {
      const int64_t Tq = q_offset == 13 ? 5 : 150, Tk = q_offset + Tq;
      SCOPED_TRACE(np.name + " q_offset " + std::to_string(q_offset));
      const SparsePattern& p = np.p;
      const BuiltLayout L = nn::build_layout(p, q_offset, Tq, Tk, H);
      const int64_t bq = q_offset % p.block == 0 ? p.block : 1;
      const int64_t rows = (Tq + bq - 1) / bq, kblocks = (Tk + p.block - 1) / p.block;
      const int64_t layouts = np.name == "bigbird" ? H : 1;
      ASSERT_EQ(L.view.n_layouts, layouts);
      ASSERT_EQ(L.view.block_q, bq);
      ASSERT_EQ(L.view.block_k, p.block);
      ASSERT_EQ(L.row_ptr.size(), static_cast<size_t>(layouts * (rows + 1)));
      int64_t nnz = 0, total = 0;
      for (int64_t h = 0; h < layouts; ++h)
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t qb = (q_offset + r * bq) / p.block;
          std::vector<int32_t> want;
          for (int64_t kb = 0; kb <= qb && kb < kblocks; ++kb, ++total)
            if (direct_rule(p, h, qb, kb)) want.push_back(static_cast<int32_t>(kb));
          const int32_t* rp = L.row_ptr.data() + h * (rows + 1);
          std::vector<int32_t> got(L.col_idx.begin() + rp[r], L.col_idx.begin() + rp[r + 1]);
          ASSERT_EQ(got, want) << "head " << h << " row " << r;
          nnz += static_cast<int64_t>(want.size());
        }
      EXPECT_EQ(L.density_nnz, nnz);
      EXPECT_EQ(L.density_total, total);
    }
  }
}

// Exact forms of the named rules on hand-checked cases (not the generic rule above).
TEST(SparsePatterns, NamedRulesOnExamples) {
  auto row = [](const SparsePattern& p, int64_t qb) {
    const BuiltLayout L = nn::build_layout(p, 0, (qb + 1) * p.block, (qb + 1) * p.block);
    return std::vector<int32_t>(L.col_idx.begin() + L.row_ptr[qb], L.col_idx.begin() + L.row_ptr[qb + 1]);
  };
  SparsePattern st(4, 1, 0, 3);  // strided l = 3: blocks 7, 6, 5 (previous 3) and 4, 1 (every 3rd)
  st.kind = PatternKind::strided;
  EXPECT_EQ(row(st, 7), (std::vector<int32_t>{1, 4, 5, 6, 7}));
  SparsePattern fx(4, 1, 0, 4);  // fixed l = 4, c = 2: own group 4..7 (<= 6), summary columns 2, 3
  fx.kind = PatternKind::fixed;
  fx.summary = 2;
  EXPECT_EQ(row(fx, 6), (std::vector<int32_t>{2, 3, 4, 5, 6}));
  SparsePattern dl(4);  // dilated (2 blocks, rate 1) + (8 blocks, rate 2): block 11 sees 10, 11 and 9
  dl.kind = PatternKind::dilated;
  dl.segments = {2, 8};
  dl.dilations = {1, 2};
  EXPECT_EQ(row(dl, 11), (std::vector<int32_t>{9, 10, 11}));
  EXPECT_EQ(row(dl, 7), (std::vector<int32_t>{1, 3, 5, 6, 7}));
  SparsePattern lf(4, 2, 1, 0);  // longformer: band 2 + global block 0
  lf.kind = PatternKind::longformer;
  EXPECT_EQ(row(lf, 5), (std::vector<int32_t>{0, 4, 5}));
}

TEST(SparsePatterns, BigBirdRandomBlocks) {
  SparsePattern p(8, 2, 1, 0);
  p.kind = PatternKind::bigbird;
  p.random = 3;
  p.seed = 99;
  bool head_differs = false, seed_differs = false;
  SparsePattern other = p;
  other.seed = 100;
  for (int64_t qb = 0; qb < 60; ++qb) {
    const std::vector<int64_t> r = p.random_blocks(qb, 0);
    const int64_t candidates = std::max<int64_t>(0, (qb - p.local) - p.global + 1);
    ASSERT_EQ(static_cast<int64_t>(r.size()), std::min<int64_t>(p.random, candidates)) << qb;
    ASSERT_TRUE(std::is_sorted(r.begin(), r.end()));
    ASSERT_EQ(std::set<int64_t>(r.begin(), r.end()).size(), r.size());
    for (int64_t kb : r) {
      EXPECT_GE(kb, p.global);
      EXPECT_LE(kb, qb - p.local);
    }
    EXPECT_EQ(r, p.random_blocks(qb, 0));  // deterministic
    head_differs = head_differs || r != p.random_blocks(qb, 1);
    seed_differs = seed_differs || r != other.random_blocks(qb, 0);
  }
  EXPECT_TRUE(head_differs);
  EXPECT_TRUE(seed_differs);
  // Same blocks whatever the length and offset: a decode row equals the prefill row.
  const BuiltLayout full = nn::build_layout(p, 0, 400, 400, 2), step = nn::build_layout(p, 397, 1, 398, 2);
  for (int h = 0; h < 2; ++h) {
    const int64_t rows = 50, qb = 397 / 8;
    const int32_t* rf = full.row_ptr.data() + h * (rows + 1);
    const int32_t* rs = step.row_ptr.data() + h * 2;
    EXPECT_EQ(std::vector<int32_t>(full.col_idx.begin() + rf[qb], full.col_idx.begin() + rf[qb + 1]),
              std::vector<int32_t>(step.col_idx.begin() + rs[0], step.col_idx.begin() + rs[1]));
  }
}

TEST(SparsePatterns, KernelEqualsDenseUnderExplicitMask) {
  AttentionDims d{2, 70, 70, 4, 2, 16, 16};
  for (const NamedPattern& np : patterns()) {
    for (int64_t q_offset : {int64_t{0}, int64_t{21}}) {  // training / a chunk over a cache (token rows)
      SCOPED_TRACE(np.name + " q_offset " + std::to_string(q_offset));
      d.Tq = q_offset ? 30 : 70;
      d.Tk = static_cast<int>(q_offset) + d.Tq;
      const uint64_t seed = 100 + 10 * np.name.size() + static_cast<uint64_t>(q_offset);
      std::vector<float> q = random_floats(nq(d), seed), k = random_floats(nk(d), seed + 1),
                         v = random_floats(nv(d), seed + 2);
      const SparsePattern& p = np.p;
      const BuiltLayout L = nn::build_layout(p, q_offset, d.Tq, d.Tk, d.Hq);
      const TokenMask m = token_mask(d.Hq, d.Tq, d.Tk, [&](int h, int64_t i, int64_t j) {
        const int64_t pos = q_offset + i;
        return j <= pos && direct_rule(p, h, pos / p.block, j / p.block);
      });
      check_against_mask(d, q_offset, L.view, m.view, q, k, v, seed);
    }
  }
}

TEST(SparsePatterns, ValidationNamesTheField) {
  auto message = [](const SparsePattern& p) {
    try {
      p.validate("cfg.json: mixer");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  SparsePattern p(8);
  p.kind = PatternKind::fixed;
  p.stride = 0;
  EXPECT_NE(message(p).find("sparse_stride"), std::string::npos) << message(p);
  p.stride = 4;
  p.summary = 5;
  EXPECT_NE(message(p).find("sparse_summary"), std::string::npos) << message(p);
  SparsePattern dl(8);
  dl.kind = PatternKind::dilated;
  EXPECT_NE(message(dl).find("sparse_segments"), std::string::npos) << message(dl);
  dl.segments = {4};
  dl.dilations = {8};
  EXPECT_NE(message(dl).find("sparse_dilations"), std::string::npos) << message(dl);
  SparsePattern r(8);
  r.random = 2;
  EXPECT_NE(message(r).find("sparse_random"), std::string::npos) << message(r);
  SparsePattern b(0);
  EXPECT_NE(message(b).find("sparse_block"), std::string::npos) << message(b);
  EXPECT_THROW(nn::parse_int_list("4,,8", "x.sparse_segments"), std::exception);
  EXPECT_THROW(nn::parse_int_list("4,0", "x.sparse_segments"), std::exception);
  EXPECT_THROW(nn::parse_int_list("4,", "x.sparse_segments"), std::exception);
  EXPECT_THROW(nn::parse_int_list("-1", "x.sparse_segments"), std::exception);
  EXPECT_EQ(nn::parse_int_list("4,16", "x"), (std::vector<int64_t>{4, 16}));
  EXPECT_THROW(nn::pattern_kind("bigbrid", "x"), std::exception);
}

// ---- MoBA ----

// MoBA selection written plainly in f64: mean keys of complete blocks, gate q . mean, a full sort
// by (gate desc, index asc), the first topk - 1, plus the own block; increasing.
std::vector<int32_t> moba_direct(const std::vector<float>& q, const std::vector<float>& k, const nn::MobaShape& s,
                                 int64_t block, int64_t topk, int64_t b, int64_t h, int64_t t) {
  const int64_t pos = s.q_offset + t, c = pos / block, hk = h / (s.Hq / s.Hkv);
  std::vector<std::pair<double, int32_t>> g;
  for (int64_t blk = 0; blk < c; ++blk) {
    double dot = 0;
    for (int64_t dd = 0; dd < s.D; ++dd) {
      double mean = 0;
      for (int64_t j = blk * block; j < (blk + 1) * block; ++j) mean += k[((b * s.Tk + j) * s.Hkv + hk) * s.D + dd];
      dot += static_cast<double>(q[((b * s.Tq + t) * s.Hq + h) * s.D + dd]) * (mean / static_cast<double>(block));
    }
    g.push_back({dot, static_cast<int32_t>(blk)});
  }
  std::sort(g.begin(), g.end(), [](const auto& a, const auto& x) {
    return a.first > x.first || (a.first == x.first && a.second < x.second);
  });
  std::vector<int32_t> out;
  for (int64_t i = 0; i < std::min<int64_t>(topk - 1, c); ++i) out.push_back(g[static_cast<size_t>(i)].second);
  out.push_back(static_cast<int32_t>(c));
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int32_t> layout_row(const BuiltLayout& L, int64_t rows, int64_t which, int64_t r) {
  const int32_t* rp = L.row_ptr.data() + which * (rows + 1);
  return {L.col_idx.begin() + rp[r], L.col_idx.begin() + rp[r + 1]};
}

TEST(Moba, SelectionMatchesDirectCode) {
  for (int64_t q_offset : {0, 37}) {
    nn::MobaShape s;
    s.B = 2, s.Hq = 4, s.Hkv = 2, s.D = 8, s.q_offset = q_offset;
    s.Tq = q_offset ? 6 : 61;
    s.Tk = q_offset + s.Tq;
    const int64_t block = 6, topk = 3;
    std::vector<float> q = random_floats(static_cast<size_t>(s.B * s.Tq * s.Hq * s.D), 7 + q_offset),
                       k = random_floats(static_cast<size_t>(s.B * s.Tk * s.Hkv * s.D), 8 + q_offset);
    const BuiltLayout L = nn::moba_layout(q.data(), k.data(), s, block, topk);
    ASSERT_EQ(L.view.block_q, 1);
    ASSERT_EQ(L.view.block_k, block);
    ASSERT_EQ(L.view.n_layouts, s.B * s.Hq);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.Hq; ++h)
        for (int64_t t = 0; t < s.Tq; ++t)
          ASSERT_EQ(layout_row(L, s.Tq, b * s.Hq + h, t), moba_direct(q, k, s, block, topk, b, h, t))
              << "b " << b << " h " << h << " t " << t << " q_offset " << q_offset;
  }
}

TEST(Moba, TiesGoToTheLowerBlockAndDecodeSelectsAsPrefill) {
  nn::MobaShape s;
  s.B = 1, s.Hq = 2, s.Hkv = 1, s.D = 4, s.Tq = 40, s.Tk = 40;
  const int64_t block = 5, topk = 3;
  std::vector<float> q = random_floats(static_cast<size_t>(s.Tq * s.Hq * s.D), 21),
                     k = random_floats(static_cast<size_t>(s.Tk * s.D), 22);
  // Blocks 1, 3 and 5 have identical keys (equal means, equal gates for every query); the other
  // blocks' keys are small, so the shared mean wins every gate.
  for (int64_t j = 0; j < s.Tk; ++j)
    for (int64_t d = 0; d < s.D; ++d) k[j * s.D + d] *= 0.01f;
  for (int64_t j = 0; j < block; ++j)
    for (int64_t d = 0; d < s.D; ++d) k[(block + j) * s.D + d] *= 100.f;
  for (int64_t j = 0; j < block; ++j)
    for (int64_t d = 0; d < s.D; ++d) k[(3 * block + j) * s.D + d] = k[(5 * block + j) * s.D + d] = k[(block + j) * s.D + d];
  // Make that shared mean dominate: every query's gate is largest there.
  for (int64_t t = 0; t < s.Tq; ++t)
    for (int64_t h = 0; h < s.Hq; ++h)
      for (int64_t d = 0; d < s.D; ++d) {
        double m = 0;
        for (int64_t j = 0; j < block; ++j) m += k[(block + j) * s.D + d];
        q[(t * s.Hq + h) * s.D + d] = static_cast<float>(m);  // q = 5 * mean: gate = 5 |mean|^2
      }
  const BuiltLayout L = nn::moba_layout(q.data(), k.data(), s, block, topk);
  for (int64_t t = 30; t < 35; ++t)  // block 6: earlier blocks 0..5, ties among 1, 3, 5 -> 1 and 3
    EXPECT_EQ(layout_row(L, s.Tq, 0, t), (std::vector<int32_t>{1, 3, 6})) << t;
  // Decode: one query at a time over the keys so far selects exactly as the prefill row.
  std::vector<float> q2 = random_floats(q.size(), 23), k2 = random_floats(k.size(), 24);
  const BuiltLayout P = nn::moba_layout(q2.data(), k2.data(), s, block, topk);
  for (int64_t t = 0; t < s.Tq; ++t) {
    nn::MobaShape one = s;
    one.Tq = 1, one.Tk = t + 1, one.q_offset = t;
    const BuiltLayout D1 = nn::moba_layout(q2.data() + t * s.Hq * s.D, k2.data(), one, block, topk);
    for (int64_t h = 0; h < s.Hq; ++h) EXPECT_EQ(layout_row(D1, 1, h, 0), layout_row(P, s.Tq, h, t)) << t;
  }
}

TEST(Moba, AttentionEqualsDenseUnderExplicitMask) {
  struct C {
    int64_t block, topk, q_offset, Tq;
  };
  for (const C& c : {C{8, 3, 0, 75}, C{8, 2, 29, 20}, C{5, 100, 0, 33}, C{128, 3, 0, 40}}) {
    SCOPED_TRACE("block " + std::to_string(c.block) + " topk " + std::to_string(c.topk) + " q_offset " +
                 std::to_string(c.q_offset));
    AttentionDims d{2, static_cast<int>(c.Tq), static_cast<int>(c.q_offset + c.Tq), 4, 2, 16, 16};
    nn::MobaShape s;
    s.B = d.B, s.Tq = d.Tq, s.Tk = d.Tk, s.Hq = d.Hq, s.Hkv = d.Hkv, s.D = d.Dk, s.q_offset = c.q_offset;
    const uint64_t seed = 300 + static_cast<uint64_t>(c.block * 7 + c.q_offset);
    std::vector<float> q = random_floats(nq(d), seed), k = random_floats(nk(d), seed + 1),
                       v = random_floats(nv(d), seed + 2);
    const BuiltLayout L = nn::moba_layout(q.data(), k.data(), s, c.block, c.topk);
    std::vector<std::vector<int32_t>> sel(static_cast<size_t>(d.B * d.Hq * d.Tq));
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.Hq; ++h)
        for (int64_t t = 0; t < d.Tq; ++t)
          sel[static_cast<size_t>((b * d.Hq + h) * d.Tq + t)] = moba_direct(q, k, s, c.block, c.topk, b, h, t);
    const TokenMask m = token_mask(d.B * d.Hq, d.Tq, d.Tk, [&](int l, int64_t i, int64_t j) {
      const std::vector<int32_t>& r = sel[static_cast<size_t>(l * d.Tq + i)];
      return j <= c.q_offset + i && std::find(r.begin(), r.end(), static_cast<int32_t>(j / c.block)) != r.end();
    });
    check_against_mask(d, c.q_offset, L.view, m.view, q, k, v, seed);
  }
}

}  // namespace
}  // namespace sw
