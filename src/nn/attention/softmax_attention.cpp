#include "nn/attention/softmax_attention.h"

#include <cmath>

#include "core/timer.h"
#include "nn/attention/block_layout.h"
#include "nn/attention/kv_cache.h"
#include "nn/attention/moba.h"
#include "nn/profile.h"
#include "ops/attention.h"
#include "ops/ops.h"

namespace sw::nn {

namespace ka = kernels::attention;

SoftmaxAttention::SoftmaxAttention(int64_t d_model, const AttentionConfig& cfg, int64_t n_layers, std::mt19937_64& rng)
    : SoftmaxAttention(d_model, cfg, MixerSite{0, n_layers}, rng) {}

SoftmaxAttention::SoftmaxAttention(int64_t d_model, const AttentionConfig& cfg, const MixerSite& site,
                                   std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  const int64_t n_layers = site.n_layers;
  SW_CHECK(cfg.n_heads > 0, "attention", "n_heads must be positive, got ", cfg.n_heads);
  n_kv_ = cfg.n_kv_heads ? cfg.n_kv_heads : cfg.n_heads;
  SW_CHECK(cfg.n_heads % n_kv_ == 0, "attention", "n_heads ", cfg.n_heads, " must be a multiple of n_kv_heads ", n_kv_);
  head_dim_ = cfg.head_dim ? cfg.head_dim : d_model / cfg.n_heads;
  SW_CHECK(head_dim_ > 0 && head_dim_ % 2 == 0, "attention", "head_dim must be positive and even, got ", head_dim_);
  rotary_dim_ = cfg.rotary_dim ? cfg.rotary_dim : head_dim_;
  SW_CHECK(rotary_dim_ % 2 == 0 && rotary_dim_ <= head_dim_, "attention", "rotary_dim ", rotary_dim_,
           " must be even and at most head_dim ", head_dim_);
  SW_CHECK(cfg.kv_dtype == "f32" || cfg.kv_dtype == "bf16" || cfg.kv_dtype == "int8" || cfg.kv_dtype == "int4" ||
               cfg.kv_dtype == "int2",
           "attention", "kv_dtype must be f32, bf16, int8, int4 or int2 (KIVI), got '", cfg.kv_dtype, "'");
  SW_CHECK(cfg.impl == "flash" || cfg.impl == "sage", "attention", "impl must be flash or sage, got '", cfg.impl, "'");
  SW_CHECK(cfg.window >= 0 && cfg.n_sink >= 0, "attention", "window and n_sink must be >= 0, got ", cfg.window, ", ",
           cfg.n_sink);
  const PatternKind kind = pattern_kind(cfg.sparse_pattern, "attention");
  if (cfg.sparse_block) {
    pattern_ = SparsePattern(cfg.sparse_block, cfg.sparse_local, cfg.sparse_global, cfg.sparse_stride);
    pattern_.kind = kind;
    pattern_.random = cfg.sparse_random;
    pattern_.summary = cfg.sparse_summary;
    // Fixed per layer: the layer index is mixed into the seed.
    pattern_.seed = static_cast<uint64_t>(cfg.sparse_seed) * 0x100000001b3ull + static_cast<uint64_t>(site.layer_index);
    pattern_.segments = parse_int_list(cfg.sparse_segments, "attention.sparse_segments");
    pattern_.dilations = parse_int_list(cfg.sparse_dilations, "attention.sparse_dilations");
    pattern_.validate("attention");
    SW_CHECK(cfg.kv_dtype == "f32" || cfg.kv_dtype == "bf16", "attention",
             "a block-sparse pattern decodes over an f32 or bf16 cache, not '", cfg.kv_dtype, "'");
    SW_CHECK(!cfg.learned_sinks, "attention", "learned_sinks and a block-sparse pattern do not combine");
  } else {
    SW_CHECK(kind == PatternKind::blocks && cfg.sparse_random == 0 && cfg.sparse_segments.empty() &&
                 cfg.sparse_dilations.empty(),
             "attention", "attention.sparse_pattern / sparse_random / sparse_segments / sparse_dilations need ",
             "sparse_block >= 1 (the pattern's block size in tokens)");
  }
  if (cfg.moba_block) {
    SW_CHECK(cfg.moba_block >= 1 && cfg.moba_block <= 4096, "attention",
             "attention.moba_block: expected 1..4096 (tokens per MoBA block; 0 = off), got ", cfg.moba_block);
    SW_CHECK(cfg.moba_topk >= 1 && cfg.moba_topk <= 65536, "attention",
             "attention.moba_topk: expected 1..65536 (key blocks per query, its own included), got ", cfg.moba_topk);
    SW_CHECK(cfg.sparse_block == 0 && cfg.window == 0 && cfg.n_sink == 0 && !cfg.learned_sinks && cfg.causal,
             "attention", "attention.moba_block: MoBA selects its own blocks; it does not combine with sparse_block, ",
             "window, n_sink, learned_sinks or causal false");
    SW_CHECK(cfg.kv_dtype == "f32" || cfg.kv_dtype == "bf16", "attention",
             "attention.moba_block: MoBA decodes over an f32 or bf16 cache, not kv_dtype '", cfg.kv_dtype, "'");
  } else {
    SW_CHECK(cfg.moba_topk >= 1, "attention", "attention.moba_topk: expected >= 1, got ", cfg.moba_topk);
  }
  SW_CHECK(cfg.causal || (cfg.sparse_block == 0 && cfg.n_sink == 0 && !cfg.learned_sinks), "attention",
           "causal false (bidirectional) takes full or windowed attention: sparse_block, n_sink and learned_sinks are ",
           "causal patterns");
  validate_kv_policy(cfg.kv, "attention");
  SW_CHECK(!cfg.kv.active() || (cfg.causal && cfg.window == 0 && cfg.n_sink == 0 && !cfg.learned_sinks &&
                                cfg.sparse_block == 0 && cfg.moba_block == 0 && cfg.kv_dtype == "f32"),
           "attention", "attention.kv_policy ", cfg.kv.policy, " runs over plain causal attention with an f32 cache: ",
           "not with window, n_sink, learned_sinks, sparse_block, moba_block, causal false or kv_dtype '", cfg.kv_dtype,
           "'");
  double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);  // GPT-2 residual scaling
  wq_ = add_module("wq", std::make_unique<Linear>(d_model, cfg.n_heads * head_dim_, false, std, rng));
  wk_ = add_module("wk", std::make_unique<Linear>(d_model, n_kv_ * head_dim_, false, std, rng));
  wv_ = add_module("wv", std::make_unique<Linear>(d_model, n_kv_ * head_dim_, false, std, rng));
  wo_ = add_module("wo", std::make_unique<Linear>(cfg.n_heads * head_dim_, d_model, false, out_std, rng));
  if (cfg.learned_sinks) sinks_ = &add_param("sinks", Tensor::zeros({cfg.n_heads}), false);
  if (cfg.qk_norm) {
    q_norm_ = add_module("q_norm", std::make_unique<RMSNorm>(head_dim_, 1e-6));
    k_norm_ = add_module("k_norm", std::make_unique<RMSNorm>(head_dim_, 1e-6));
  }
  if (cfg.output_gate) wg_ = add_module("wg", std::make_unique<Linear>(d_model, cfg.n_heads * head_dim_, false, std, rng));
}

namespace {

// RoPE of x [B, T, H, D] at its tokens' positions: position + t in every row, or, with per-row
// positions (a Mixture-of-Depths block), row by row (one rope call when the rows agree).
Variable rope_at(const Variable& x, const MixerContext& ctx, int64_t rotary_dim, double base) {
  const int64_t B = x.dim(0), T = x.dim(1);
  if (!ctx.positions.defined()) {
    std::vector<int32_t> pos(T);
    for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(ctx.position + t);
    return ops::rope(x, Tensor::from_vector(pos, {T}), rotary_dim, base);
  }
  const Tensor pos = ctx.positions.contiguous();
  SW_CHECK(pos.dtype() == DType::i32 && pos.shape() == (Shape{B, T}), "attention", "positions must be i32[", B, ", ",
           T, "], got ", pos.describe());
  const int32_t* p = pos.data<int32_t>();
  bool rows_agree = true;
  for (int64_t i = T; i < B * T && rows_agree; ++i) rows_agree = p[i] == p[i % T];
  if (rows_agree) return ops::rope(x, pos.slice(0, 0, 1).contiguous().reshape({T}), rotary_dim, base);
  std::vector<Variable> rows;
  for (int64_t b = 0; b < B; ++b)
    rows.push_back(ops::rope(ops::slice(x, 0, b, b + 1), pos.slice(0, b, b + 1).contiguous().reshape({T}), rotary_dim,
                             base));
  return ops::concat(rows, 0);
}

}  // namespace

Variable SoftmaxAttention::forward(const Variable& x, const MixerContext& ctx) {
  int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads;
  // The kernels count a window or a block-sparse pattern in key indices; with per-row positions
  // (a subset of the tokens) indices are not distances, so only full causal attention is exact
  // (causality itself holds: the subset keeps the tokens' order).
  SW_CHECK(!ctx.positions.defined() || (cfg_.window == 0 && cfg_.sparse_block == 0 && cfg_.moba_block == 0),
           "attention", "per-row positions (a Mixture-of-Depths block) need full attention: window ", cfg_.window,
           ", sparse_block ", cfg_.sparse_block, " and moba_block ", cfg_.moba_block,
           " count keys by index, not by position");
  Variable q = ops::reshape(wq_->forward(x), {B, T, H, head_dim_});
  Variable k = ops::reshape(wk_->forward(x), {B, T, n_kv_, head_dim_});
  Variable v = ops::reshape(wv_->forward(x), {B, T, n_kv_, head_dim_});
  if (q_norm_) q = q_norm_->forward(q), k = k_norm_->forward(k);
  if (cfg_.rope) {
    q = rope_at(q, ctx, rotary_dim_, cfg_.rope_base);
    k = rope_at(k, ctx, rotary_dim_, cfg_.rope_base);
  }
  Variable o = attend(q, k, v, ctx);
  if (wg_) o = ops::mul(o, ops::sigmoid(ops::reshape(wg_->forward(x), {B, T, H, head_dim_})));
  return wo_->forward(ops::reshape(o, {B, T, H * head_dim_}));
}

// o [B, T, H, D] of q over the keys so far: the new ones (training, first prefill) or the cache.
Variable SoftmaxAttention::attend(const Variable& q, const Variable& k, const Variable& v, const MixerContext& ctx) {
  const int64_t B = q.dim(0), T = q.dim(1), H = cfg_.n_heads;
  ka::AttentionParams p;
  p.causal = cfg_.causal;
  p.window = cfg_.window;
  p.n_sink = cfg_.n_sink;
  const SparsePattern& pattern = pattern_;
  BuiltLayout layout;
  auto moba_shape = [&](int64_t q_offset, int64_t Tk) {
    MobaShape s;
    s.B = B, s.Tq = T, s.Tk = Tk, s.Hq = H, s.Hkv = n_kv_, s.D = head_dim_, s.q_offset = q_offset;
    return s;
  };
  auto* cache = static_cast<AttentionCache*>(ctx.state);
  SW_CHECK(!cache || cfg_.causal, "attention",
           "bidirectional attention (causal false) has no incremental decode: every token sees later ones; run the ",
           "whole sequence without a state");
  if (!cache || (cache->length() == 0 && !cache->attends_prefill())) {
    // Training, or the first prefill: exact attention over the new tokens, then fill the cache.
    if (cache) cache->append(k.data(), v.data());
    if (pattern.active()) layout = build_layout(pattern, 0, T, T, H), p.layout = layout.view;
    if (cfg_.moba_block) {
      const Tensor qc = q.data().contiguous(), kc = k.data().contiguous();
      layout = moba_layout(qc.data<float>(), kc.data<float>(), moba_shape(0, T), cfg_.moba_block, cfg_.moba_topk);
      p.layout = layout.view;
    }
    if (cfg_.impl == "sage" && !grad_enabled() && !sinks_) return ops::sage_attention(q, k, v, p);
    return ops::attention(q, k, v, p, sinks_);
  }
  // Later tokens attend over the cache, which then includes them.
  const int64_t past = cache->length();
  cache->append(k.data(), v.data());
  if (sinks_) p.sink_logits = sinks_->data().data<float>();
  if (pattern.active() || cfg_.moba_block) {
    // The decode kernel knows windows, not layouts: run the tiled kernel over the cached keys with
    // one layout row per new query (exact; O(cache) copy per call). MoBA selects for each new
    // query by the same rule over the cached keys.
    const auto* kv = static_cast<const KvCache*>(cache);
    p.q_offset = past;
    const Tensor keys = kv->keys();
    if (cfg_.moba_block) {
      const Tensor qc = q.data().contiguous();
      layout = moba_layout(qc.data<float>(), keys.data<float>(), moba_shape(past, past + T), cfg_.moba_block,
                           cfg_.moba_topk);
    } else {
      layout = build_layout(pattern, past, T, past + T, H);
    }
    p.layout = layout.view;
    NoGradGuard no_grad;
    return ops::attention(q, Variable(keys), Variable(kv->values()), p);
  }
  Tensor out = Tensor::empty({B, T, H, head_dim_});
  double t0 = now_seconds();
  cache->attend(q.data().contiguous(), p, out);
  profile_add(ProfileSlot::attention_decode, now_seconds() - t0);
  return Variable(out);
}

std::unique_ptr<LayerState> SoftmaxAttention::new_state(int64_t batch) const {
  if (cfg_.kv.active())
    return std::make_unique<PolicyKvCache>(batch, n_kv_, head_dim_, head_dim_, cfg_.kv,
                                           CachedRope{cfg_.rope, rotary_dim_, cfg_.rope_base});
  if (cfg_.kv_dtype.rfind("int", 0) == 0)
    return std::make_unique<KiviKvCache>(batch, n_kv_, head_dim_, head_dim_, std::stoi(cfg_.kv_dtype.substr(3)));
  return std::make_unique<KvCache>(batch, n_kv_, head_dim_, head_dim_, cfg_.kv_dtype == "bf16" ? DType::bf16 : DType::f32);
}

// Without a KV policy the cache keeps every token (even with a window): it grows with the context.
int64_t SoftmaxAttention::state_bytes(int64_t context) const {
  if (cfg_.kv.active()) return policy_cache_bytes(cfg_.kv, context, n_kv_, head_dim_, head_dim_);
  if (cfg_.kv_dtype.rfind("int", 0) == 0) {  // codes, plus per-group key and per-token value scales
    int64_t bits = std::stoi(cfg_.kv_dtype.substr(3));
    return context * n_kv_ * (2 * head_dim_ * bits / 8 + 2 * 4 + 2 * 4 * head_dim_ / 32);
  }
  return 2 * context * n_kv_ * head_dim_ * (cfg_.kv_dtype == "bf16" ? 2 : 4);
}

double SoftmaxAttention::extra_flops_per_token(int64_t context) const {
  // Bidirectional: the window is symmetric, |i - j| < window.
  const int64_t span = cfg_.causal ? cfg_.window + cfg_.n_sink : 2 * cfg_.window - 1;
  int64_t visible = cfg_.window ? std::min(context, span) : context;
  if (cfg_.moba_block) visible = std::min(context, cfg_.moba_block * cfg_.moba_topk);
  if (cfg_.sparse_block) {  // the pattern's computed key blocks, averaged over the context's query blocks
    const BuiltLayout L = build_layout(pattern_, 0, std::max<int64_t>(context, 1), std::max<int64_t>(context, 1),
                                       cfg_.n_heads);
    visible = static_cast<int64_t>(static_cast<double>(visible) * static_cast<double>(L.density_nnz) /
                                   static_cast<double>(std::max<int64_t>(L.density_total, 1)));
  }
  return 4.0 * static_cast<double>(cfg_.n_heads * head_dim_) * static_cast<double>(visible);  // QK^T and PV
}

}  // namespace sw::nn
