#include "nn/attention/mla.h"

#include <cmath>

#include "kernels/attention/mla_decode.h"
#include "kernels/gemm/gemm.h"
#include "ops/attention.h"
#include "ops/ops.h"

namespace sw::nn {

LatentCache::LatentCache(int64_t batch, int64_t width) : batch_(batch), width_(width) {
  rows_ = Tensor::zeros({batch_, capacity_, width_});
}

void LatentCache::append(const Tensor& rows) {
  SW_CHECK(rows.ndim() == 3 && rows.dim(0) == batch_ && rows.dim(2) == width_, "mla_cache", "rows must be [", batch_,
           ", T, ", width_, "], got ", rows.describe());
  int64_t t = rows.dim(1);
  if (length_ + t > capacity_) {
    int64_t cap = capacity_;
    while (cap < length_ + t) cap *= 2;
    Tensor grown = Tensor::zeros({batch_, cap, width_});
    if (length_) grown.slice(1, 0, length_).copy_from(rows_.slice(1, 0, length_));
    rows_ = grown, capacity_ = cap;
  }
  rows_.slice(1, length_, length_ + t).copy_from(rows);
  length_ += t;
}

MultiHeadLatentAttention::MultiHeadLatentAttention(int64_t d_model, const MlaConfig& cfg, int64_t n_layers,
                                                   std::mt19937_64& rng)
    : cfg_(cfg) {
  SW_CHECK(cfg.n_heads > 0 && cfg.kv_lora_rank > 0 && cfg.qk_nope_dim > 0 && cfg.v_head_dim > 0, "mla",
           "n_heads, kv_lora_rank, qk_nope_dim and v_head_dim must be positive");
  SW_CHECK(cfg.qk_rope_dim > 0 && cfg.qk_rope_dim % 2 == 0, "mla", "qk_rope_dim must be positive and even, got ",
           cfg.qk_rope_dim);
  const int64_t H = cfg.n_heads, qk = cfg.qk_nope_dim + cfg.qk_rope_dim;
  double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);
  if (cfg.q_lora_rank > 0) {
    wq_a_ = add_module("wq_a", std::make_unique<Linear>(d_model, cfg.q_lora_rank, false, std, rng));
    q_norm_ = add_module("q_norm", std::make_unique<RMSNorm>(cfg.q_lora_rank, 1e-6));
    wq_b_ = add_module("wq_b", std::make_unique<Linear>(cfg.q_lora_rank, H * qk, false, std, rng));
  } else {
    wq_ = add_module("wq", std::make_unique<Linear>(d_model, H * qk, false, std, rng));
  }
  wkv_a_ = add_module("wkv_a", std::make_unique<Linear>(d_model, cfg.kv_lora_rank + cfg.qk_rope_dim, false, std, rng));
  kv_norm_ = add_module("kv_norm", std::make_unique<RMSNorm>(cfg.kv_lora_rank, 1e-6));
  wkv_b_ = add_module("wkv_b", std::make_unique<Linear>(cfg.kv_lora_rank, H * (cfg.qk_nope_dim + cfg.v_head_dim), false,
                                                        std, rng));
  wo_ = add_module("wo", std::make_unique<Linear>(H * cfg.v_head_dim, d_model, false, out_std, rng));
}

Variable MultiHeadLatentAttention::materialised(const Variable& q_nope, const Variable& q_rope, const Variable& c_kv,
                                                const Variable& k_rope) {
  const int64_t B = q_nope.dim(0), T = q_nope.dim(1), H = cfg_.n_heads;
  Variable kv = ops::reshape(wkv_b_->forward(c_kv), {B, T, H, cfg_.qk_nope_dim + cfg_.v_head_dim});
  Variable k_nope = ops::slice(kv, 3, 0, cfg_.qk_nope_dim);
  Variable v = ops::slice(kv, 3, cfg_.qk_nope_dim, cfg_.qk_nope_dim + cfg_.v_head_dim);
  std::vector<Variable> shared(H, k_rope);  // one rotary key, seen by every head
  Variable k = ops::concat({k_nope, ops::concat(shared, 2)}, 3);
  Variable q = ops::concat({q_nope, q_rope}, 3);
  kernels::attention::AttentionParams p;
  p.causal = true;
  p.scale = 1.f / std::sqrt(static_cast<float>(cfg_.qk_nope_dim + cfg_.qk_rope_dim));
  return ops::attention(q, k, v, p);
}

Tensor MultiHeadLatentAttention::absorbed(const Tensor& q_nope, const Tensor& q_rope, LatentCache& cache,
                                          int64_t new_tokens) {
  const int64_t B = q_nope.dim(0), T = new_tokens, H = cfg_.n_heads, dc = cfg_.kv_lora_rank;
  const int64_t nope = cfg_.qk_nope_dim, vd = cfg_.v_head_dim, stride = (nope + vd) * dc;
  const Tensor& w = wkv_b_->weight().data();  // [H * (nope + vd), dc]: per head W_UK (nope rows) then W_UV
  const char* wb = static_cast<const char*>(w.raw_data());
  size_t es = dtype_size(w.dtype());
  // q_lat[:, h] = q_nope[:, h] @ W_UK,h   ([B*T, nope] @ [nope, dc]), batched over heads.
  Tensor q_lat = Tensor::empty({B, T, H, dc});
  kernels::GemmArgs g;
  g.m = B * T, g.n = dc, g.k = nope, g.batch = H;
  g.a = q_nope.data<float>(), g.lda = H * nope, g.stride_a = nope;
  g.b = wb, g.b_type = w.dtype(), g.ldb = dc, g.stride_b = stride;
  g.c = q_lat.data<float>(), g.ldc = H * dc, g.stride_c = dc;
  kernels::gemm(g);
  kernels::attention::MlaDecodeDims d;
  d.batch = B, d.new_tokens = T, d.heads = H, d.latent = dc, d.rope = cfg_.qk_rope_dim;
  d.capacity = cache.capacity(), d.length = cache.length();
  Tensor out_lat = Tensor::empty({B, T, H, dc});
  float scale = 1.f / std::sqrt(static_cast<float>(nope + cfg_.qk_rope_dim));
  kernels::attention::mla_absorbed_attention(q_lat.data<float>(), q_rope.data<float>(), cache.rows().data<float>(), d,
                                             scale, out_lat.data<float>());
  // o[:, h] = out_lat[:, h] @ W_UV,h^T   ([B*T, dc] @ [dc, vd]).
  Tensor o = Tensor::empty({B, T, H, vd});
  kernels::GemmArgs u;
  u.m = B * T, u.n = vd, u.k = dc, u.batch = H;
  u.a = out_lat.data<float>(), u.lda = H * dc, u.stride_a = dc;
  u.b = wb + static_cast<size_t>(nope * dc) * es, u.b_type = w.dtype(), u.trans_b = true, u.ldb = dc, u.stride_b = stride;
  u.c = o.data<float>(), u.ldc = H * vd, u.stride_c = vd;
  kernels::gemm(u);
  return o;
}

Variable MultiHeadLatentAttention::forward(const Variable& x, const MixerContext& ctx) {
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads, qk = cfg_.qk_nope_dim + cfg_.qk_rope_dim;
  Variable q = wq_ ? wq_->forward(x) : wq_b_->forward(q_norm_->forward(wq_a_->forward(x)));
  q = ops::reshape(q, {B, T, H, qk});
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(ctx.position + t);
  Tensor positions = Tensor::from_vector(pos, {T});
  Variable q_nope = ops::slice(q, 3, 0, cfg_.qk_nope_dim);
  Variable q_rope = ops::rope(ops::slice(q, 3, cfg_.qk_nope_dim, qk), positions, cfg_.qk_rope_dim, cfg_.rope_base);
  Variable kv_a = wkv_a_->forward(x);
  Variable c_kv = kv_norm_->forward(ops::slice(kv_a, 2, 0, cfg_.kv_lora_rank));
  Variable k_rope = ops::rope(ops::reshape(ops::slice(kv_a, 2, cfg_.kv_lora_rank, cfg_.kv_lora_rank + cfg_.qk_rope_dim),
                                           {B, T, 1, cfg_.qk_rope_dim}),
                              positions, cfg_.qk_rope_dim, cfg_.rope_base);
  Variable o;
  if (!ctx.state) {
    o = materialised(q_nope, q_rope, c_kv, k_rope);
  } else {
    auto* cache = static_cast<LatentCache*>(ctx.state);
    Tensor rows = ops::concat({c_kv, ops::reshape(k_rope, {B, T, cfg_.qk_rope_dim})}, 2).data();
    cache->append(rows);
    o = Variable(absorbed(q_nope.data(), q_rope.data(), *cache, T));
  }
  return wo_->forward(ops::reshape(o, {B, T, H * cfg_.v_head_dim}));
}

std::unique_ptr<LayerState> MultiHeadLatentAttention::new_state(int64_t batch) const {
  return std::make_unique<LatentCache>(batch, cfg_.kv_lora_rank + cfg_.qk_rope_dim);
}

int64_t MultiHeadLatentAttention::state_bytes(int64_t context) const {
  return context * (cfg_.kv_lora_rank + cfg_.qk_rope_dim) * static_cast<int64_t>(sizeof(float));
}

double MultiHeadLatentAttention::extra_flops_per_token(int64_t context) const {
  // Scores over nope + rope channels and the weighted sum of values, per head (materialised form).
  return 2.0 * cfg_.n_heads * (cfg_.qk_nope_dim + cfg_.qk_rope_dim + cfg_.v_head_dim) * static_cast<double>(context);
}

}  // namespace sw::nn
