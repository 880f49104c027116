#include "nn/attention/kv_policy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/checked.h"
#include "kernels/rope/rope.h"

namespace sw::nn {

namespace ka = kernels::attention;

void validate_kv_policy(const KvPolicyConfig& c, const std::string& where) {
  const std::string& p = c.policy;
  SW_CHECK(p == "full" || p == "streaming" || p == "h2o" || p == "tova" || p == "snapkv" || p == "quest", where,
           ".kv_policy: expected full, streaming, h2o, tova, snapkv or quest, got '", p, "'");
  if (!c.active()) return;
  constexpr int64_t kMaxBudget = int64_t{1} << 20;
  SW_CHECK(c.budget >= 1 && c.budget <= kMaxBudget, where, ".kv_budget: expected 1..", kMaxBudget, " tokens for kv_policy ",
           p, ", got ", c.budget);
  if (p == "streaming")
    SW_CHECK(c.sinks >= 0 && c.sinks < c.budget, where, ".kv_sinks: expected 0..kv_budget - 1 (", c.budget - 1,
             "), got ", c.sinks);
  if (p == "h2o")
    SW_CHECK(c.recent >= 0 && c.recent < c.budget, where, ".kv_recent: expected 0..kv_budget - 1 (", c.budget - 1,
             ") recent tokens (0 = half the budget), got ", c.recent);
  if (p == "snapkv") {
    SW_CHECK(c.window >= 1 && c.window < c.budget, where, ".kv_window: expected 1..kv_budget - 1 (", c.budget - 1,
             "), got ", c.window);
    SW_CHECK(c.pool >= 1 && c.pool <= 1025 && c.pool % 2 == 1, where, ".kv_pool: expected an odd kernel 1..1025, got ",
             c.pool);
  }
  if (p == "quest")
    SW_CHECK(c.page >= 1 && c.page <= c.budget, where, ".kv_page: expected 1..kv_budget (", c.budget, "), got ", c.page);
}

int64_t policy_cache_bytes(const KvPolicyConfig& c, int64_t context, int64_t kv_heads, int64_t head_dim_k,
                           int64_t head_dim_v) {
  const int64_t slots = c.bounded() ? c.budget + 1 : c.policy == "snapkv" ? std::min(context, c.budget) : context;
  int64_t bytes = slots * kv_heads * ((head_dim_k + head_dim_v) * 4 + 16);
  if (c.policy == "streaming") bytes += c.sinks * kv_heads * head_dim_k * 4;
  if (c.policy == "quest") bytes += (context + c.page - 1) / c.page * kv_heads * 2 * head_dim_k * 4;
  return bytes;
}

PolicyKvCache::PolicyKvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v,
                             const KvPolicyConfig& cfg, const CachedRope& rope)
    : B_(batch), H_(kv_heads), dk_(head_dim_k), dv_(head_dim_v), cfg_(cfg), rope_(rope) {
  validate_kv_policy(cfg_, "attention");
  SW_CHECK(cfg_.active(), "kv_policy", "PolicyKvCache needs a policy other than full");
  checked_mul(checked_mul(B_, H_, "kv_policy", "batch x kv heads"), std::max(dk_, dv_), "kv_policy", "cache row",
              kMaxTensorElements);
  // Bounded policies hold at most budget + 1 tokens (the newest before its eviction): allocated once.
  reserve(cfg_.bounded() ? cfg_.budget + 1 : 256);
  if (cfg_.policy == "streaming") sink_keys_.assign(static_cast<size_t>(B_ * H_ * cfg_.sinks * dk_), 0.f);
}

// Grows every per-(b, h) row to `capacity` slots, keeping the held ones.
void PolicyKvCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  checked_mul(checked_mul(B_ * H_, capacity, "kv_policy", "cache slots"), std::max(dk_, dv_), "kv_policy",
              "cache elements", kMaxTensorElements);
  auto regrow = [&](auto& buf, int64_t width) {
    std::remove_reference_t<decltype(buf)> grown(static_cast<size_t>(B_ * H_ * capacity * width));
    for (int64_t bh = 0; bh < B_ * H_; ++bh)
      std::copy_n(buf.begin() + bh * capacity_ * width, n_ * width, grown.begin() + bh * capacity * width);
    buf.swap(grown);
  };
  regrow(k_, dk_), regrow(v_, dv_), regrow(pos_, 1), regrow(score_, 1);
  if (cfg_.policy == "quest") {
    const int64_t old_pages = (capacity_ + cfg_.page - 1) / cfg_.page, pages = (capacity + cfg_.page - 1) / cfg_.page;
    auto regrow_pages = [&](std::vector<float>& buf) {
      std::vector<float> grown(static_cast<size_t>(B_ * H_ * pages * dk_));
      for (int64_t bh = 0; bh < B_ * H_; ++bh)
        std::copy_n(buf.begin() + bh * old_pages * dk_, old_pages * dk_, grown.begin() + bh * pages * dk_);
      buf.swap(grown);
    };
    regrow_pages(page_min_), regrow_pages(page_max_);
  }
  capacity_ = capacity;
}

void PolicyKvCache::append(const Tensor& k_new, const Tensor& v_new) {
  SW_CHECK(k_new.ndim() == 4 && k_new.dim(0) == B_ && k_new.dim(2) == H_ && k_new.dim(3) == dk_, "kv_policy",
           "keys must be [", B_, ", T, ", H_, ", ", dk_, "], got ", k_new.describe());
  SW_CHECK(v_new.ndim() == 4 && v_new.dim(0) == B_ && v_new.dim(1) == k_new.dim(1) && v_new.dim(2) == H_ &&
               v_new.dim(3) == dv_,
           "kv_policy", "values ", v_new.describe(), " do not match keys ", k_new.describe());
  SW_CHECK(!staged_k_.defined(), "kv_policy", "append() twice without attend(): the staged tokens were not attended");
  staged_k_ = k_new.to(DType::f32).contiguous();
  staged_v_ = v_new.to(DType::f32).contiguous();
  seen_ += k_new.dim(1);
}

// Staged token t joins every (b, h) at slot n_.
void PolicyKvCache::insert(int64_t t) {
  if (n_ == capacity_) reserve(capacity_ * 2);
  const int64_t T = staged_k_.dim(1), position = seen_ - T + t;
  const float* ks = staged_k_.data<float>();
  const float* vs = staged_v_.data<float>();
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t h = 0; h < H_; ++h) {
      const int64_t bh = b * H_ + h, slot = bh * capacity_ + n_;
      const float* k = ks + ((b * T + t) * H_ + h) * dk_;
      std::copy_n(k, dk_, k_.begin() + slot * dk_);
      std::copy_n(vs + ((b * T + t) * H_ + h) * dv_, dv_, v_.begin() + slot * dv_);
      pos_[slot] = position, score_[slot] = 0;
      if (cfg_.policy == "streaming" && position < cfg_.sinks)
        std::copy_n(k, dk_, sink_keys_.begin() + (bh * cfg_.sinks + position) * dk_);
      if (cfg_.policy == "quest") {  // channel-wise key bounds of the slot's page
        const int64_t pages = (capacity_ + cfg_.page - 1) / cfg_.page, page = n_ / cfg_.page;
        float* lo = page_min_.data() + (bh * pages + page) * dk_;
        float* hi = page_max_.data() + (bh * pages + page) * dk_;
        const bool first = n_ % cfg_.page == 0;
        for (int64_t c = 0; c < dk_; ++c) {
          lo[c] = first ? k[c] : std::min(lo[c], k[c]);
          hi[c] = first ? k[c] : std::max(hi[c], k[c]);
        }
      }
    }
  ++n_;
}

// Token t's queries (every query head) attend the held slots (quest after the prompt: the selected
// pages). Statistics: h2o accumulates the weights, snapkv accumulates the observation window's
// weights, tova keeps this query's weights (summed over the KV head's query heads).
void PolicyKvCache::attend_token(int64_t t, const float* q, int Hq, float scale, float* o) {
  const int64_t T = staged_k_.dim(1), group = Hq / H_;
  const bool h2o = cfg_.policy == "h2o", tova = cfg_.policy == "tova";
  const bool vote = cfg_.policy == "snapkv" && !prompt_done_ && t >= T - cfg_.window;
  const bool select_pages = cfg_.policy == "quest" && prompt_done_;
  const int64_t n_pages = (n_ + cfg_.page - 1) / cfg_.page, keep_pages = (cfg_.budget + cfg_.page - 1) / cfg_.page;
#pragma omp parallel for if (B_ * H_ > 1) schedule(static)
  for (int64_t bh = 0; bh < B_ * H_; ++bh) {
    const int64_t b = bh / H_, h = bh % H_;
    const float* keys = k_.data() + bh * capacity_ * dk_;
    const float* values = v_.data() + bh * capacity_ * dv_;
    double* stat = score_.data() + bh * capacity_;
    if (tova) std::fill_n(stat, n_, 0.0);
    std::vector<float> w(static_cast<size_t>(n_));
    std::vector<int64_t> slots;
    for (int64_t g = 0; g < group; ++g) {
      const int64_t hq = h * group + g;
      const float* qv = q + ((b * T + t) * Hq + hq) * dk_;
      slots.clear();
      if (select_pages && n_pages > keep_pages) {
        // Quest's upper bound of q . k over each page; the newest page is always read.
        const int64_t stride = (capacity_ + cfg_.page - 1) / cfg_.page;
        const float* lo = page_min_.data() + bh * stride * dk_;
        const float* hi = page_max_.data() + bh * stride * dk_;
        std::vector<std::pair<float, int64_t>> bound(static_cast<size_t>(n_pages - 1));
        for (int64_t pg = 0; pg + 1 < n_pages; ++pg) {
          float s = 0;
          for (int64_t c = 0; c < dk_; ++c) s += std::max(qv[c] * lo[pg * dk_ + c], qv[c] * hi[pg * dk_ + c]);
          bound[pg] = {-s, pg};  // ascending order = highest bound first, ties to the earlier page
        }
        std::partial_sort(bound.begin(), bound.begin() + (keep_pages - 1), bound.end());
        std::vector<int64_t> pages;
        for (int64_t i = 0; i + 1 < keep_pages; ++i) pages.push_back(bound[i].second);
        pages.push_back(n_pages - 1);
        std::sort(pages.begin(), pages.end());
        for (int64_t pg : pages)
          for (int64_t s = pg * cfg_.page; s < std::min(n_, (pg + 1) * cfg_.page); ++s) slots.push_back(s);
      } else {
        for (int64_t s = 0; s < n_; ++s) slots.push_back(s);
      }
      float mx = -std::numeric_limits<float>::infinity();
      for (size_t i = 0; i < slots.size(); ++i) {
        const float* kv = keys + slots[i] * dk_;
        float dot = 0;
        for (int64_t c = 0; c < dk_; ++c) dot += qv[c] * kv[c];
        w[i] = dot * scale;
        mx = std::max(mx, w[i]);
      }
      double sum = 0;
      for (size_t i = 0; i < slots.size(); ++i) sum += (w[i] = std::exp(w[i] - mx));
      const float inv = static_cast<float>(1.0 / sum);
      float* out = o + ((b * T + t) * Hq + hq) * dv_;
      std::fill_n(out, dv_, 0.f);
      for (size_t i = 0; i < slots.size(); ++i) {
        const float p = w[i] * inv;
        const float* vv = values + slots[i] * dv_;
        for (int64_t c = 0; c < dv_; ++c) out[c] += p * vv[c];
        if (h2o || tova || vote) stat[slots[i]] += p;
      }
    }
  }
}

// Removes one slot of row bh; later slots move down one (cache order = arrival order).
void PolicyKvCache::remove_slot(int64_t bh, int64_t slot) {
  const int64_t row = bh * capacity_, tail = n_ - slot - 1;
  std::memmove(k_.data() + (row + slot) * dk_, k_.data() + (row + slot + 1) * dk_, tail * dk_ * sizeof(float));
  std::memmove(v_.data() + (row + slot) * dv_, v_.data() + (row + slot + 1) * dv_, tail * dv_ * sizeof(float));
  std::memmove(pos_.data() + row + slot, pos_.data() + row + slot + 1, tail * sizeof(int64_t));
  std::memmove(score_.data() + row + slot, score_.data() + row + slot + 1, tail * sizeof(double));
}

// After each token the bounded policies hold budget + 1 tokens at most: one leaves.
void PolicyKvCache::evict() {
  if (!cfg_.bounded() || n_ <= cfg_.budget) return;
  if (cfg_.policy == "streaming") {
    for (int64_t bh = 0; bh < B_ * H_; ++bh) remove_slot(bh, cfg_.sinks);  // the oldest non-sink token
    ++evicted_;
  } else if (cfg_.policy == "h2o") {
    const int64_t candidates = n_ - cfg_.resolved_recent();
    for (int64_t bh = 0; bh < B_ * H_; ++bh) {
      const double* s = score_.data() + bh * capacity_;
      remove_slot(bh, std::min_element(s, s + candidates) - s);  // ties: the oldest
    }
  } else {  // tova: one decision per layer and sequence, by the weights summed over all heads
    for (int64_t b = 0; b < B_; ++b) {
      int64_t worst = 0;
      double worst_w = std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s < n_; ++s) {
        double w = 0;
        for (int64_t h = 0; h < H_; ++h) w += score_[(b * H_ + h) * capacity_ + s];
        if (w < worst_w) worst_w = w, worst = s;
      }
      for (int64_t h = 0; h < H_; ++h) remove_slot(b * H_ + h, worst);
    }
  }
  --n_;
  if (cfg_.policy == "streaming") rerotate_sinks();
}

// StreamingLLM's positions inside the cache: the sinks sit at 0..s-1 and the window right after
// them, ending at the query. The window keys were rotated at their absolute positions, which are
// already contiguous up to the query; the sinks are rotated forward by the evicted count, so every
// relative distance is one of cache indices. RoPE rotations compose (R(a) R(e) = R(a + e)), and
// rotating the sinks' first keys afresh each time keeps rounding from accumulating.
void PolicyKvCache::rerotate_sinks() {
  if (!rope_.enabled || cfg_.sinks == 0 || evicted_ == 0) return;
  const int32_t shift = static_cast<int32_t>(std::min<int64_t>(evicted_, std::numeric_limits<int32_t>::max()));
  for (int64_t bh = 0; bh < B_ * H_; ++bh)
    // The sinks of row bh as [1, 1, sinks, Dk]: one token, `sinks` heads, all at position `shift`.
    kernels::rope_fwd(sink_keys_.data() + bh * cfg_.sinks * dk_, k_.data() + bh * capacity_ * dk_, &shift, 1, 1,
                      cfg_.sinks, dk_, rope_.rotary_dim, static_cast<float>(rope_.base));
}

// SnapKV: per head, the prefix tokens (all but the last `window`) with the highest max-pooled votes
// of the window's queries, budget - window of them, in their order, then the window.
void PolicyKvCache::snapkv_compress(int64_t observed) {
  if (n_ <= cfg_.budget) return;
  const int64_t w = std::min(cfg_.window, observed), prefix = n_ - w, keep = cfg_.budget - w, half = cfg_.pool / 2;
  for (int64_t bh = 0; bh < B_ * H_; ++bh) {
    const double* vote = score_.data() + bh * capacity_;
    std::vector<std::pair<double, int64_t>> pooled(static_cast<size_t>(prefix));
    for (int64_t j = 0; j < prefix; ++j) {
      double m = -1;
      for (int64_t i = std::max<int64_t>(0, j - half); i <= std::min(prefix - 1, j + half); ++i) m = std::max(m, vote[i]);
      pooled[j] = {-m, j};  // ascending = most voted first, ties to the earlier token
    }
    std::partial_sort(pooled.begin(), pooled.begin() + keep, pooled.end());
    std::vector<int64_t> kept;
    for (int64_t i = 0; i < keep; ++i) kept.push_back(pooled[i].second);
    std::sort(kept.begin(), kept.end());
    for (int64_t s = prefix; s < n_; ++s) kept.push_back(s);
    const int64_t row = bh * capacity_;
    for (size_t i = 0; i < kept.size(); ++i) {  // kept[i] >= i: compacting forward is safe
      const int64_t from = row + kept[i], to = row + static_cast<int64_t>(i);
      std::copy_n(k_.begin() + from * dk_, dk_, k_.begin() + to * dk_);
      std::copy_n(v_.begin() + from * dv_, dv_, v_.begin() + to * dv_);
      pos_[to] = pos_[from];
    }
  }
  n_ = cfg_.budget;
}

void PolicyKvCache::attend(const Tensor& q, const ka::AttentionParams& p, Tensor& o) {
  SW_CHECK(staged_k_.defined(), "kv_policy", "attend() without append(): no staged tokens");
  const int64_t T = staged_k_.dim(1);
  SW_CHECK(q.ndim() == 4 && q.dim(0) == B_ && q.dim(1) == T && q.dim(2) % H_ == 0 && q.dim(3) == dk_, "kv_policy",
           "queries must be [", B_, ", ", T, ", a multiple of ", H_, ", ", dk_, "], got ", q.describe());
  SW_CHECK(p.causal && p.window == 0 && p.n_sink == 0 && !p.sink_logits && p.layout.block_q == 0, "kv_policy",
           "a KV policy runs plain causal attention (no window, sinks or block layout)");
  const Tensor qc = q.to(DType::f32).contiguous();
  const int Hq = static_cast<int>(q.dim(2));
  const float scale = ka::effective_scale(p, static_cast<int>(dk_));
  for (int64_t t = 0; t < T; ++t) {
    insert(t);
    attend_token(t, qc.data<float>(), Hq, scale, o.data<float>());
    evict();
  }
  if (!prompt_done_ && cfg_.policy == "snapkv") snapkv_compress(T);
  prompt_done_ = true;
  staged_k_ = Tensor(), staged_v_ = Tensor();
}

std::vector<int64_t> PolicyKvCache::kept_positions(int64_t b, int64_t h) const {
  SW_CHECK(b >= 0 && b < B_ && h >= 0 && h < H_, "kv_policy", "no row (", b, ", ", h, ")");
  const auto first = pos_.begin() + (b * H_ + h) * capacity_;
  return std::vector<int64_t>(first, first + n_);
}

int64_t PolicyKvCache::bytes() const {
  return static_cast<int64_t>((k_.size() + v_.size() + sink_keys_.size() + page_min_.size() + page_max_.size()) *
                                  sizeof(float) +
                              pos_.size() * sizeof(int64_t) + score_.size() * sizeof(double));
}

}  // namespace sw::nn
