// The dropless MoE dispatch kernels (kernels/moe/moe_dispatch.h) against plain loops:
// - the plan is a stable counting sort (offsets, slot <-> assignment maps) on a crafted assignment;
// - gather / combine and their backwards equal per-assignment loops (exact: same fp32 operations);
// - the grouped SwiGLU forward and backward equal an f64 loop over experts, and the sequential and
//   parallel expert schedules agree. Tolerance 2e-5 absolute on values of size ~1: fp32 GEMM
//   reductions over D or H <= 48 terms round at ~1e-6 relative, far below the bound.
#include <cmath>
#include <vector>

#include "kernels/moe/moe_dispatch.h"
#include "kernels/ref/basic_ref.h"
#include "testing.h"

namespace sw::kernels {
namespace {

using Vec = std::vector<double>;

TEST(MoeDispatch, PlanIsStableCountingSort) {
  // N = 4 tokens, k = 2, E = 3; -1 = not dispatched.
  std::vector<int32_t> expert = {2, 0, 0, -1, 2, 1, 0, 2};
  std::vector<int64_t> offsets(4);
  std::vector<int32_t> slot_assign(8, -7), assign_slot(8);
  int64_t S = moe_build_plan(expert.data(), 8, 3, offsets.data(), slot_assign.data(), assign_slot.data());
  EXPECT_EQ(S, 7);
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 3, 4, 7}));
  // Expert 0: assignments 1, 2, 6; expert 1: 5; expert 2: 0, 4, 7 (assignment order within an expert).
  EXPECT_EQ(std::vector<int32_t>(slot_assign.begin(), slot_assign.begin() + 7),
            (std::vector<int32_t>{1, 2, 6, 5, 0, 4, 7}));
  EXPECT_EQ(assign_slot, (std::vector<int32_t>{4, 0, 1, -1, 5, 3, 2, 6}));
}

TEST(MoeDispatch, GatherCombineAndBackwardsEqualLoops) {
  const int64_t N = 37, k = 3, E = 5, D = 19;  // odd sizes: no vector-width luck
  std::vector<int32_t> expert(N * k);
  for (int64_t a = 0; a < N * k; ++a) expert[a] = (a * 7 + a / 5) % 6 - 1;  // includes -1
  std::vector<int64_t> offsets(E + 1);
  std::vector<int32_t> sa(N * k), as(N * k);
  const int64_t S = moe_build_plan(expert.data(), N * k, E, offsets.data(), sa.data(), as.data());
  std::vector<float> x = testing::random_floats(N * D, 1), gates = testing::random_floats(N * k, 2);
  std::vector<float> ys = testing::random_floats(S * D, 3), dy = testing::random_floats(N * D, 4);
  std::vector<float> xs(S * D), y(N * D), dys(S * D), dg(N * k), dx(N * D);
  moe_gather(x.data(), sa.data(), S, k, D, xs.data());
  moe_combine(ys.data(), as.data(), gates.data(), N, k, D, y.data());
  moe_combine_backward(dy.data(), ys.data(), as.data(), gates.data(), N, k, D, dys.data(), dg.data());
  moe_gather_backward(xs.data(), as.data(), N, k, D, dx.data());
  std::vector<float> y_ref(N * D, 0.f), dx_ref(N * D, 0.f);
  for (int64_t a = 0; a < N * k; ++a) {
    const int64_t n = a / k;
    if (expert[a] < 0) {
      EXPECT_EQ(as[a], -1);
      EXPECT_EQ(dg[a], 0.f);
      continue;
    }
    const int64_t s = as[a];
    ASSERT_EQ(sa[s], a);
    float dot = 0.f;
    for (int64_t d = 0; d < D; ++d) {
      EXPECT_EQ(xs[s * D + d], x[n * D + d]);
      EXPECT_EQ(dys[s * D + d], gates[a] * dy[n * D + d]);
      y_ref[n * D + d] += gates[a] * ys[s * D + d];
      dx_ref[n * D + d] += xs[s * D + d];
      dot += dy[n * D + d] * ys[s * D + d];
    }
    EXPECT_NEAR(dg[a], dot, 1e-5);  // summation order may differ (simd reduction)
  }
  EXPECT_TRUE(testing::all_close(y, y_ref, 1e-6, 0));
  EXPECT_TRUE(testing::all_close(dx, dx_ref, 1e-6, 0));
}

// f64 SwiGLU of expert e on row v: Wd_e (silu(Wg_e v) * Wu_e v).
Vec expert_ref(const Vec& wg, const Vec& wu, const Vec& wd, int64_t e, const Vec& v, int64_t H, int64_t D) {
  Vec g(wg.begin() + e * H * D, wg.begin() + (e + 1) * H * D), u(wu.begin() + e * H * D, wu.begin() + (e + 1) * H * D),
      dn(wd.begin() + e * D * H, wd.begin() + (e + 1) * D * H);
  Vec a = ref::swiglu(ref::matmul(v, g, 1, H, D, true), ref::matmul(v, u, 1, H, D, true));
  return ref::matmul(a, dn, 1, D, H, true);
}

TEST(MoeDispatch, GroupedSwigluEqualsLoopAndSchedulesAgree) {
  // Expert 3 gets no rows; expert 1 gets 40 rows (crosses the 32-row GEMM split).
  const int64_t E = 5, H = 12, D = 10;
  const std::vector<int64_t> offsets = {0, 3, 43, 44, 44, 51};
  const int64_t S = offsets[E];
  std::vector<float> xs = testing::random_floats(S * D, 5), wg = testing::random_floats(E * H * D, 6, -.5f, .5f),
                     wu = testing::random_floats(E * H * D, 7, -.5f, .5f),
                     wd = testing::random_floats(E * D * H, 8, -.5f, .5f), dys = testing::random_floats(S * D, 9);
  MoeExpertWeights w{wg.data(), wu.data(), wd.data(), DType::f32, E, H, D};
  struct Out {
    std::vector<float> hg, hu, act, ys, dxs, dwg, dwu, dwd;
  };
  auto run = [&](MoeSchedule s) {
    Out o{std::vector<float>(S * H), std::vector<float>(S * H), std::vector<float>(S * H), std::vector<float>(S * D),
          std::vector<float>(S * D), std::vector<float>(E * H * D, 9.f), std::vector<float>(E * H * D, 9.f),
          std::vector<float>(E * D * H, 9.f)};
    std::vector<float> s1(S * H), s2(S * H), s3(S * H);
    moe_swiglu_experts_fwd(xs.data(), offsets.data(), w, o.hg.data(), o.hu.data(), o.act.data(), o.ys.data(), s);
    moe_swiglu_experts_bwd(xs.data(), offsets.data(), w, o.hg.data(), o.hu.data(), o.act.data(), dys.data(),
                           o.dxs.data(), o.dwg.data(), o.dwu.data(), o.dwd.data(), s1.data(), s2.data(), s3.data(), s);
    return o;
  };
  Out seq = run(MoeSchedule::kSequential), par = run(MoeSchedule::kParallel);
  // f64 reference: forward per row, and the gradients of L = sum(ys * dys) by the chain rule.
  const Vec wg64 = testing::to_f64(wg), wu64 = testing::to_f64(wu), wd64 = testing::to_f64(wd);
  Vec ys_ref(S * D), dxs_ref(S * D, 0), dwg_ref(E * H * D, 0), dwu_ref(E * H * D, 0), dwd_ref(E * D * H, 0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t s = offsets[e]; s < offsets[e + 1]; ++s) {
      Vec v(xs.begin() + s * D, xs.begin() + (s + 1) * D);
      Vec y = expert_ref(wg64, wu64, wd64, e, v, H, D);
      std::copy(y.begin(), y.end(), ys_ref.begin() + s * D);
      for (int64_t h = 0; h < H; ++h) {
        double g = 0, u = 0, da = 0;
        for (int64_t d = 0; d < D; ++d) {
          g += wg64[(e * H + h) * D + d] * v[d];
          u += wu64[(e * H + h) * D + d] * v[d];
          da += dys[s * D + d] * wd64[(e * D + d) * H + h];
        }
        const double sg = 1 / (1 + std::exp(-g)), a = g * sg * u;
        const double dg = da * u * sg * (1 + g * (1 - sg)), du = da * g * sg;
        for (int64_t d = 0; d < D; ++d) {
          dwd_ref[(e * D + d) * H + h] += dys[s * D + d] * a;
          dwg_ref[(e * H + h) * D + d] += dg * v[d];
          dwu_ref[(e * H + h) * D + d] += du * v[d];
          dxs_ref[s * D + d] += dg * wg64[(e * H + h) * D + d] + du * wu64[(e * H + h) * D + d];
        }
      }
    }
  for (const Out* o : {&seq, &par}) {
    EXPECT_TRUE(testing::all_close(o->ys, ys_ref, 2e-5, 0));
    EXPECT_TRUE(testing::all_close(o->dxs, dxs_ref, 2e-5, 0));
    EXPECT_TRUE(testing::all_close(o->dwg, dwg_ref, 2e-5, 0));  // expert 3: exactly zero (ref is 0)
    EXPECT_TRUE(testing::all_close(o->dwu, dwu_ref, 2e-5, 0));
    EXPECT_TRUE(testing::all_close(o->dwd, dwd_ref, 2e-5, 0));
  }
  for (int64_t i = 0; i < H * D; ++i) EXPECT_EQ(seq.dwg[3 * H * D + i], 0.f);
}

}  // namespace
}  // namespace sw::kernels
