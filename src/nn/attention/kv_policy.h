// Training-free KV-cache policies (survey section 3.3; docs/research/methods.md 2.3), chosen at
// generate/eval/bench time for any softmax-attention model: they change what the cache keeps or
// reads, never the weights.
//   streaming (StreamingLLM, Xiao et al. 2023): the first `sinks` tokens + the most recent ones, with
//             positions re-assigned inside the cache (the sinks' keys are re-rotated so that every
//             kept token sits at its cache index, as mit-han-lab/streaming-llm's pos_shift does);
//   h2o       (Zhang et al. 2023): accumulated attention per cached token (column sums over every
//             query so far); over budget, the lowest-scoring token outside the `recent` most recent
//             ones is evicted;
//   tova      (Oren et al. 2024): over budget, the token with the lowest attention weight from the
//             current query, averaged over all heads, is evicted (one decision per layer);
//   snapkv    (Li et al. 2024): one-shot compression after the prompt: the last `window` prompt
//             queries vote for earlier keys, votes are pooled (kernel `pool`), the top budget - window
//             prefix tokens per head are kept with the window; decode then appends without eviction;
//   quest     (Tang et al. 2024): nothing is evicted; keys are paged (`page` tokens), each page keeps
//             channel-wise min/max keys, and every decode query attends only the ceil(budget / page)
//             pages of highest upper bound sum_c max(q_c min_c, q_c max_c), its own page always
//             among them (the prompt itself is attended densely).
// Every policy processes the new tokens one at a time inside attend(): token t enters the cache,
// its query attends what is kept, statistics are updated, and the cache is evicted back to budget.
// So a prompt run as one prefill gives exactly what decoding it token by token gives, and the
// bounded policies never hold more than budget + 1 tokens (storage is allocated once).
// With GQA, a KV head's statistics sum over its query heads (the kept set is per KV head).
#pragma once

#include <string>
#include <vector>

#include "nn/attention/kv_cache.h"

namespace sw::nn {

struct KvPolicyConfig {
  std::string policy = "full";  // full | streaming | h2o | tova | snapkv | quest
  int64_t budget = 0;           // tokens kept per head (quest: tokens attended per query)
  int64_t sinks = 4;            // streaming: attention-sink tokens at the start
  int64_t recent = 0;           // h2o: most recent tokens never evicted (0 = budget / 2)
  int64_t window = 32;          // snapkv: observation window (last prompt queries that vote)
  int64_t pool = 7;             // snapkv: max-pooling kernel over the votes (odd; 1 = none)
  int64_t page = 16;            // quest: tokens per page

  template <class V>
  void visit(V& v) {
    v("kv_policy", policy, "KV-cache policy at inference: full, streaming, h2o, tova, snapkv or quest");
    v("kv_budget", budget, "KV policy: tokens kept per head (quest: tokens attended per decode query)");
    v("kv_sinks", sinks, "streaming: attention-sink tokens kept at the start");
    v("kv_recent", recent, "h2o: most recent tokens never evicted (0 = kv_budget / 2)");
    v("kv_window", window, "snapkv: observation window of last prompt queries");
    v("kv_pool", pool, "snapkv: max-pool kernel over the window's votes (odd, 1 = none)");
    v("kv_page", page, "quest: tokens per page");
  }
  bool active() const { return policy != "full"; }
  bool bounded() const { return policy == "streaming" || policy == "h2o" || policy == "tova"; }
  int64_t resolved_recent() const { return recent ? recent : budget / 2; }
};

// Checks the policy name and every field's range; errors name `where`.kv_<field>.
void validate_kv_policy(const KvPolicyConfig& c, const std::string& where);

// Bytes a PolicyKvCache holds per sequence after `context` tokens (the prompt, for snapkv): the
// bounded policies budget + 1 slots whatever the context; snapkv at most budget; quest every token
// plus two key bounds per page. Each slot: keys, values, position (8 bytes) and statistic (8 bytes).
int64_t policy_cache_bytes(const KvPolicyConfig& c, int64_t context, int64_t kv_heads, int64_t head_dim_k,
                           int64_t head_dim_v);

// The rotary embedding the attention layer applied to the cached keys (streaming re-rotates sinks).
struct CachedRope {
  bool enabled = false;
  int64_t rotary_dim = 0;
  double base = 10000.0;
};

class PolicyKvCache : public AttentionCache {
 public:
  PolicyKvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v, const KvPolicyConfig& cfg,
                const CachedRope& rope);
  // Stages the new tokens (rotated keys at their absolute positions); attend() takes them in.
  void append(const Tensor& k_new, const Tensor& v_new) override;  // [B, T, Hkv, Dk], [B, T, Hkv, Dv] f32
  // q [B, T, Hq, Dk] of the staged tokens (RoPE at their absolute positions) -> o [B, T, Hq, Dv].
  void attend(const Tensor& q, const kernels::attention::AttentionParams& p, Tensor& o) override;
  bool attends_prefill() const override { return true; }
  int64_t length() const override { return seen_; }  // tokens seen: the next token's absolute position
  int64_t bytes() const override;
  const char* kind() const override { return "kv"; }

  int64_t kept() const { return n_; }  // tokens held per head now
  // Absolute positions of the tokens held for (batch b, KV head h), in cache order.
  std::vector<int64_t> kept_positions(int64_t b, int64_t h) const;

 private:
  void reserve(int64_t capacity);
  void insert(int64_t t);                  // staged token t enters every head
  void attend_token(int64_t t, const float* q, int Hq, float scale, float* o);
  void remove_slot(int64_t bh, int64_t slot);
  void evict();                            // back to budget (bounded policies)
  void snapkv_compress(int64_t observed);  // after the prompt: keep budget tokens per head
  void rerotate_sinks();

  int64_t B_, H_, dk_, dv_;
  KvPolicyConfig cfg_;
  CachedRope rope_;
  int64_t n_ = 0, capacity_ = 0, seen_ = 0, evicted_ = 0;
  bool prompt_done_ = false;  // snapkv and quest treat the first call (the prompt) apart
  // Per (b, h) rows of `capacity_` slots: keys, values, absolute positions, statistics.
  std::vector<float> k_, v_;
  std::vector<int64_t> pos_;
  std::vector<double> score_;       // h2o: accumulated attention; snapkv: votes; tova: this step's weights
  std::vector<float> sink_keys_;    // streaming: the sinks' keys as first rotated [B*H, sinks, Dk]
  std::vector<float> page_min_, page_max_;  // quest: [B*H, pages, Dk]
  Tensor staged_k_, staged_v_;      // [B, T, H, D] of append(), consumed by attend()
};

}  // namespace sw::nn
