// KV-cache policies (nn/attention/kv_policy.h) against straightforward f64 code: a reference that
// keeps, for every (sequence, KV head), the list of held positions and each policy's statistic,
// applies RoPE in f64 at the positions the policy assigns, and evicts by the rules as the papers
// state them (StreamingLLM: the oldest non-sink; H2O: the lowest accumulated weight outside the
// recent window; TOVA: the lowest weight of the current query summed over heads; SnapKV: top pooled
// votes of the observation window after the prompt; Quest: top pages by the min/max key bound).
//
// Tolerances: the cache computes scores, softmax and the value sum in f32 over at most 40 keys of
// head dim 16 with |q|, |k|, |v| <= 3 (streaming also rotates the sinks twice in f32); relative errors
// of a few 1e-7 per operation give |o - o_ref| well below 2e-5.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "kernels/ref/attention_ref.h"
#include "kernels/ref/basic_ref.h"
#include "kernels/rope/rope.h"
#include "model_testing.h"
#include "nn/attention/kv_policy.h"

namespace sw {
namespace {

using testing::random_floats;
using Vec = std::vector<double>;

constexpr int64_t B = 2, Hq = 4, Hkv = 2, D = 16, T0 = 20, T = 40;  // prompt T0, then decode to T
constexpr double kBase = 10000.0;

struct Inputs {
  std::vector<float> q, k, v;  // raw (before RoPE): [B, T, Hq, D], [B, T, Hkv, D], [B, T, Hkv, D]
};

Inputs make_inputs(uint64_t seed) {
  Inputs in{random_floats(B * T * Hq * D, seed, -3.f, 3.f), random_floats(B * T * Hkv * D, seed + 1),
            random_floats(B * T * Hkv * D, seed + 2)};
  return in;
}

// RoPE of one head vector [D] at `position`, in f64.
Vec rope_f64(const float* x, int64_t position) {
  Vec v(x, x + D);
  return kernels::ref::rope(v, {static_cast<int32_t>(position)}, 1, 1, 1, D, D, kBase);
}

// f32 RoPE of x [B, T, H, D] at absolute positions 0..T-1: what the attention layer hands the cache.
std::vector<float> rotated(const std::vector<float>& x, int64_t heads) {
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t);
  std::vector<float> y(x.size());
  kernels::rope_fwd(x.data(), y.data(), pos.data(), B, T, heads, D, D, static_cast<float>(kBase));
  return y;
}

// Tokens [t0, t1) of x [B, T, H, D] as a tensor [B, t1 - t0, H, D].
Tensor tokens(const std::vector<float>& x, int64_t heads, int64_t t0, int64_t t1) {
  return Tensor::from_vector(x, {B, T, heads, D}).slice(1, t0, t1).contiguous();
}

// Runs the cache over the prompt as one call, then one token per call; returns o [B, T, Hq, D].
std::vector<float> run_cache(nn::PolicyKvCache& cache, const Inputs& in, bool prompt_in_one_call = true) {
  const std::vector<float> q = rotated(in.q, Hq), k = rotated(in.k, Hkv);
  std::vector<float> out(B * T * Hq * D);
  kernels::attention::AttentionParams p;
  auto step = [&](int64_t t0, int64_t t1) {
    cache.append(tokens(k, Hkv, t0, t1), tokens(in.v, Hkv, t0, t1));
    Tensor o = Tensor::empty({B, t1 - t0, Hq, D});
    cache.attend(tokens(q, Hq, t0, t1), p, o);
    const float* src = o.data<float>();
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(src + b * (t1 - t0) * Hq * D, (t1 - t0) * Hq * D, out.data() + (b * T + t0) * Hq * D);
  };
  if (prompt_in_one_call) step(0, T0);
  for (int64_t t = prompt_in_one_call ? T0 : 0; t < T; ++t) step(t, t + 1);
  return out;
}

// The straightforward simulation. kept[bh] lists held absolute positions in arrival order.
struct Reference {
  std::vector<double> o = std::vector<double>(B * T * Hq * D);
  std::vector<std::vector<int64_t>> kept = std::vector<std::vector<int64_t>>(B * Hkv);
};

Reference run_reference(const nn::KvPolicyConfig& c, const Inputs& in) {
  Reference r;
  std::vector<std::vector<double>> stat(B * Hkv);
  const int64_t group = Hq / Hkv;
  const bool streaming = c.policy == "streaming";
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t bh = 0; bh < B * Hkv; ++bh) r.kept[bh].push_back(t), stat[bh].push_back(0);
    std::vector<std::vector<double>> step_w(B * Hkv);  // tova: this query's weights
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hkv; ++h) {
        const int64_t bh = b * Hkv + h, n = static_cast<int64_t>(r.kept[bh].size());
        step_w[bh].assign(n, 0);
        for (int64_t g = 0; g < group; ++g) {
          const int64_t hq = h * group + g;
          const float* qraw = in.q.data() + ((b * T + t) * Hq + hq) * D;
          // StreamingLLM: the query sits at its cache index and key i at index i.
          const Vec qv = rope_f64(qraw, streaming ? n - 1 : t);
          auto key_at = [&](int64_t slot) {
            return rope_f64(in.k.data() + ((b * T + r.kept[bh][slot]) * Hkv + h) * D, streaming ? slot : r.kept[bh][slot]);
          };
          std::vector<int64_t> slots;
          const int64_t pages = (n + c.page - 1) / c.page, keep_pages = (c.budget + c.page - 1) / c.page;
          if (c.policy == "quest" && t >= T0 && pages > keep_pages) {
            std::vector<std::pair<double, int64_t>> bound;
            for (int64_t pg = 0; pg + 1 < pages; ++pg) {
              Vec lo(D, INFINITY), hi(D, -INFINITY);
              for (int64_t s = pg * c.page; s < (pg + 1) * c.page; ++s) {
                const Vec kv = key_at(s);
                for (int64_t d = 0; d < D; ++d) lo[d] = std::min(lo[d], kv[d]), hi[d] = std::max(hi[d], kv[d]);
              }
              double s = 0;
              for (int64_t d = 0; d < D; ++d) s += std::max(qv[d] * lo[d], qv[d] * hi[d]);
              bound.push_back({-s, pg});
            }
            std::sort(bound.begin(), bound.end());
            std::set<int64_t> chosen = {pages - 1};
            for (int64_t i = 0; i + 1 < keep_pages; ++i) chosen.insert(bound[i].second);
            for (int64_t pg : chosen)
              for (int64_t s = pg * c.page; s < std::min(n, (pg + 1) * c.page); ++s) slots.push_back(s);
          } else {
            for (int64_t s = 0; s < n; ++s) slots.push_back(s);
          }
          Vec logit;
          for (int64_t s : slots) {
            const Vec kv = key_at(s);
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qv[d] * kv[d];
            logit.push_back(dot / std::sqrt(double(D)));
          }
          const double mx = *std::max_element(logit.begin(), logit.end());
          double sum = 0;
          for (double& l : logit) sum += (l = std::exp(l - mx));
          double* o = r.o.data() + ((b * T + t) * Hq + hq) * D;
          for (size_t i = 0; i < slots.size(); ++i) {
            const double p = logit[i] / sum;
            const float* vv = in.v.data() + ((b * T + r.kept[bh][slots[i]]) * Hkv + h) * D;
            for (int64_t d = 0; d < D; ++d) o[d] += p * vv[d];
            if (c.policy == "h2o") stat[bh][slots[i]] += p;
            if (c.policy == "snapkv" && t < T0 && t >= T0 - c.window) stat[bh][slots[i]] += p;
            step_w[bh][slots[i]] += p;
          }
        }
      }
    auto erase = [&](int64_t bh, int64_t slot) {
      r.kept[bh].erase(r.kept[bh].begin() + slot);
      stat[bh].erase(stat[bh].begin() + slot);
    };
    const int64_t n = static_cast<int64_t>(r.kept[0].size());
    if (n > c.budget && c.policy == "streaming")
      for (int64_t bh = 0; bh < B * Hkv; ++bh) erase(bh, c.sinks);
    if (n > c.budget && c.policy == "h2o")
      for (int64_t bh = 0; bh < B * Hkv; ++bh) {
        int64_t worst = 0;
        for (int64_t s = 1; s < n - c.resolved_recent(); ++s)
          if (stat[bh][s] < stat[bh][worst]) worst = s;
        erase(bh, worst);
      }
    if (n > c.budget && c.policy == "tova")
      for (int64_t b = 0; b < B; ++b) {
        int64_t worst = 0;
        double worst_w = INFINITY;
        for (int64_t s = 0; s < n; ++s) {
          double w = 0;
          for (int64_t h = 0; h < Hkv; ++h) w += step_w[b * Hkv + h][s];
          if (w < worst_w) worst_w = w, worst = s;
        }
        for (int64_t h = 0; h < Hkv; ++h) erase(b * Hkv + h, worst);
      }
    if (t == T0 - 1 && c.policy == "snapkv" && n > c.budget)
      for (int64_t bh = 0; bh < B * Hkv; ++bh) {
        const int64_t prefix = n - c.window;
        std::vector<std::pair<double, int64_t>> pooled;
        for (int64_t j = 0; j < prefix; ++j) {
          double m = 0;
          for (int64_t i = std::max<int64_t>(0, j - c.pool / 2); i <= std::min(prefix - 1, j + c.pool / 2); ++i)
            m = std::max(m, stat[bh][i]);
          pooled.push_back({-m, j});
        }
        std::sort(pooled.begin(), pooled.end());
        std::vector<int64_t> keep;
        for (int64_t i = 0; i < c.budget - c.window; ++i) keep.push_back(r.kept[bh][pooled[i].second]);
        std::sort(keep.begin(), keep.end());
        for (int64_t s = prefix; s < n; ++s) keep.push_back(r.kept[bh][s]);
        r.kept[bh] = keep;
        stat[bh].assign(keep.size(), 0);
      }
  }
  return r;
}

nn::KvPolicyConfig policy(const std::string& name, int64_t budget) {
  nn::KvPolicyConfig c;
  c.policy = name, c.budget = budget, c.sinks = 2, c.recent = 4, c.window = 4, c.pool = 3, c.page = 4;
  return c;
}

class KvPolicyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(KvPolicyTest, MatchesStraightforwardReference) {
  const nn::KvPolicyConfig c = policy(GetParam(), GetParam() == "quest" ? 8 : 12);
  const Inputs in = make_inputs(11);
  nn::PolicyKvCache cache(B, Hkv, D, D, c, nn::CachedRope{true, D, kBase});
  const std::vector<float> o = run_cache(cache, in);
  const Reference ref = run_reference(c, in);
  EXPECT_TRUE(testing::all_close(o.data(), ref.o.data(), o.size(), 2e-5, 1e-4));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hkv; ++h) EXPECT_EQ(cache.kept_positions(b, h), ref.kept[b * Hkv + h]) << b << "," << h;
  if (c.bounded() || c.policy == "snapkv") {
    EXPECT_LE(cache.kept(), c.budget + (c.policy == "snapkv" ? T - T0 : 0));
  }
}

// With room for every token each policy is plain causal attention (f64 reference kernel).
TEST_P(KvPolicyTest, LargeBudgetIsFullAttention) {
  const nn::KvPolicyConfig c = policy(GetParam(), 64);
  const Inputs in = make_inputs(12);
  nn::PolicyKvCache cache(B, Hkv, D, D, c, nn::CachedRope{true, D, kBase});
  const std::vector<float> o = run_cache(cache, in);
  const std::vector<float> q = rotated(in.q, Hq), k = rotated(in.k, Hkv);
  kernels::attention::AttentionDims d;
  d.B = B, d.Tq = T, d.Tk = T, d.Hq = Hq, d.Hkv = Hkv, d.Dk = D, d.Dv = D;
  std::vector<double> o_ref(o.size()), lse(B * Hq * T);
  kernels::ref::attention_forward_ref(testing::to_f64(q).data(), testing::to_f64(k).data(), testing::to_f64(in.v).data(),
                                      nullptr, d, kernels::attention::AttentionParams{}, o_ref.data(), lse.data());
  EXPECT_TRUE(testing::all_close(o.data(), o_ref.data(), o.size(), 2e-5, 1e-4));
  EXPECT_EQ(cache.kept(), T);
}

INSTANTIATE_TEST_SUITE_P(Policies, KvPolicyTest, ::testing::Values("streaming", "h2o", "tova", "snapkv", "quest"));

// Tokens enter one at a time inside attend(), so the bounded policies give the same bits whether
// the prompt comes as one prefill or token by token, and their memory does not grow.
TEST(KvPolicy, BoundedPoliciesPrefillEqualsDecodeAndStayFlat) {
  const Inputs in = make_inputs(13);
  for (const char* name : {"streaming", "h2o", "tova"}) {
    const nn::KvPolicyConfig c = policy(name, 12);
    nn::PolicyKvCache one_call(B, Hkv, D, D, c, nn::CachedRope{true, D, kBase});
    nn::PolicyKvCache per_token(B, Hkv, D, D, c, nn::CachedRope{true, D, kBase});
    const int64_t bytes_before = per_token.bytes();
    const std::vector<float> a = run_cache(one_call, in, true), b = run_cache(per_token, in, false);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << name;
    EXPECT_EQ(per_token.bytes(), bytes_before) << name;
    EXPECT_EQ(per_token.bytes(), B * nn::policy_cache_bytes(c, T, Hkv, D, D)) << name;  // per sequence
  }
}

TEST(KvPolicy, StreamingKeepsSinksAndTheRecentWindow) {
  const nn::KvPolicyConfig c = policy("streaming", 12);
  nn::PolicyKvCache cache(B, Hkv, D, D, c, nn::CachedRope{true, D, kBase});
  run_cache(cache, make_inputs(14));
  std::vector<int64_t> expected = {0, 1};
  for (int64_t t = T - 10; t < T; ++t) expected.push_back(t);
  EXPECT_EQ(cache.kept_positions(1, 1), expected);
}

TEST(KvPolicy, RejectsBadSettings) {
  EXPECT_THROW(nn::validate_kv_policy(policy("lru", 8), "x"), Error);
  EXPECT_THROW(nn::validate_kv_policy(policy("h2o", 0), "x"), Error);
  nn::KvPolicyConfig c = policy("snapkv", 8);
  c.window = 8;
  EXPECT_THROW(nn::validate_kv_policy(c, "x"), Error);
  c = policy("snapkv", 8), c.pool = 4;
  EXPECT_THROW(nn::validate_kv_policy(c, "x"), Error);
  c = policy("streaming", 8), c.sinks = 8;
  EXPECT_THROW(nn::validate_kv_policy(c, "x"), Error);
}

// Through a model: with room for every token a policy changes nothing (prefill == decode ==
// training forward); with eviction the prompt as one prefill == the prompt fed token by token.
models::ModelConfig tiny_attention(const std::string& name, int64_t budget) {
  models::ModelConfig cfg;
  cfg.d_model = 32, cfg.n_layers = 2, cfg.vocab_size = 64;
  cfg.mixer = {{"type", "attention"}, {"n_heads", 4}, {"n_kv_heads", 2}, {"kv_policy", name}, {"kv_budget", budget},
               {"kv_sinks", 2}, {"kv_window", 4}, {"kv_page", 4}};
  return models::parse_model_config(models::model_config_to_json(cfg), "test");
}

TEST(KvPolicy, ModelWithRoomForEveryTokenMatchesFullCache) {
  for (const char* name : {"streaming", "h2o", "tova", "snapkv", "quest"})
    EXPECT_TRUE(testing::prefill_matches_decode(tiny_attention(name, 64), 2e-4)) << name;
}

TEST(KvPolicy, ModelPrefillEqualsTokenByTokenUnderEviction) {
  for (const char* name : {"streaming", "h2o", "tova"}) {
    const models::ModelConfig cfg = tiny_attention(name, 10);
    models::LanguageModel m(cfg);
    NoGradGuard g;
    const Tensor ids = testing::random_ids(2, 30, cfg.vocab_size, 4);
    auto one = m.new_state(2), steps = m.new_state(2);
    const std::vector<float> a = m.hidden(ids, one.get()).data().to_floats();
    std::vector<float> b;
    for (int64_t t = 0; t < 30; ++t) {
      const std::vector<float> h = m.hidden(ids.slice(1, t, t + 1).contiguous(), steps.get()).data().to_floats();
      b.insert(b.end(), h.begin(), h.end());
    }
    // b is [T][B, D] step-major; a is [B, T, D].
    std::vector<float> b_bt(a.size());
    for (int64_t t = 0; t < 30; ++t)
      for (int64_t r = 0; r < 2; ++r)
        std::copy_n(b.data() + (t * 2 + r) * 32, 32, b_bt.data() + (r * 30 + t) * 32);
    EXPECT_TRUE(testing::all_close(a.data(), b_bt.data(), a.size(), 1e-5, 1e-5)) << name;
  }
}

TEST(KvPolicy, ModelRejectsPolicyWithWindow) {
  models::ModelConfig cfg = tiny_attention("h2o", 8);
  cfg.mixer["window"] = 16;
  EXPECT_THROW(models::LanguageModel m(cfg), Error);
}

}  // namespace
}  // namespace sw
