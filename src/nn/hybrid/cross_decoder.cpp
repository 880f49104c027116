#include "nn/hybrid/cross_decoder.h"

#include <cmath>

#include "nn/attention/kv_cache.h"
#include "ops/attention.h"
#include "ops/ops.h"

namespace sw::nn {

namespace ka = kernels::attention;

namespace {

Tensor positions_from(int64_t start, int64_t T) {
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(start + t);
  return Tensor::from_vector(pos, {T});
}

int64_t checked_head_dim(int64_t d_model, const CrossDecoderConfig& c, const char* op) {
  SW_CHECK(c.n_heads > 0 && c.n_heads <= 1024, op, "n_heads must be in 1..1024, got ", c.n_heads);
  SW_CHECK(c.kv_heads() > 0 && c.n_heads % c.kv_heads() == 0, op, "n_heads ", c.n_heads,
           " must be a multiple of n_kv_heads ", c.kv_heads());
  const int64_t hd = c.resolved_head_dim(d_model);
  SW_CHECK(hd > 0 && hd % 2 == 0 && hd <= 1024, op, "head_dim must be even and in 2..1024, got ", hd);
  SW_CHECK(c.rope_base > 1, op, "rope_base must be > 1, got ", c.rope_base);
  SW_CHECK(c.kv_dtype == "f32" || c.kv_dtype == "bf16", op, "kv_dtype must be f32 or bf16, got '", c.kv_dtype, "'");
  return hd;
}

}  // namespace

CrossKvProducer::CrossKvProducer(int64_t d_model, const CrossDecoderConfig& cfg, double norm_eps,
                                 std::mt19937_64& rng)
    : cfg_(cfg), head_dim_(checked_head_dim(d_model, cfg, "yoco")) {
  norm_ = add_module("norm", std::make_unique<RMSNorm>(d_model, norm_eps));
  wk_ = add_module("wk", std::make_unique<Linear>(d_model, cfg.kv_heads() * head_dim_, false, 0.02, rng));
  wv_ = add_module("wv", std::make_unique<Linear>(d_model, cfg.kv_heads() * head_dim_, false, 0.02, rng));
}

CrossKv CrossKvProducer::produce(const Variable& x, int64_t position, LayerState* cache) {
  const int64_t B = x.dim(0), T = x.dim(1), Hkv = cfg_.kv_heads();
  Variable h = norm_->forward(x);
  CrossKv out;
  out.k = ops::rope(ops::reshape(wk_->forward(h), {B, T, Hkv, head_dim_}), positions_from(position, T), head_dim_,
                    cfg_.rope_base);
  out.v = ops::reshape(wv_->forward(h), {B, T, Hkv, head_dim_});
  if (cache) {
    auto* c = static_cast<AttentionCache*>(cache);
    SW_CHECK(c->length() == position, "yoco", "shared cache holds ", c->length(), " tokens, expected ", position);
    c->append(out.k.data().contiguous(), out.v.data().contiguous());
    out.cache = c;
  }
  return out;
}

std::unique_ptr<LayerState> CrossKvProducer::new_state(int64_t batch) const {
  return std::make_unique<KvCache>(batch, cfg_.kv_heads(), head_dim_, head_dim_,
                                   cfg_.kv_dtype == "bf16" ? DType::bf16 : DType::f32);
}

int64_t CrossKvProducer::state_bytes(int64_t context) const {
  return 2 * context * cfg_.kv_heads() * head_dim_ * (cfg_.kv_dtype == "bf16" ? 2 : 4);
}

CrossDecoderAttention::CrossDecoderAttention(int64_t d_model, const CrossDecoderConfig& cfg, int64_t n_layers,
                                             std::mt19937_64& rng)
    : cfg_(cfg), head_dim_(checked_head_dim(d_model, cfg, "yoco-cross")) {
  const double out_std = 0.02 / std::sqrt(2.0 * n_layers);
  wq_ = add_module("wq", std::make_unique<Linear>(d_model, cfg.n_heads * head_dim_, false, 0.02, rng));
  wo_ = add_module("wo", std::make_unique<Linear>(cfg.n_heads * head_dim_, d_model, false, out_std, rng));
}

Variable CrossDecoderAttention::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(ctx.cross_kv, "yoco-cross", "no shared key/value: a cross-decoder runs inside a model that builds one");
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads;
  Variable q = ops::rope(ops::reshape(wq_->forward(x), {B, T, H, head_dim_}), positions_from(ctx.position, T),
                         head_dim_, cfg_.rope_base);
  ka::AttentionParams p;
  p.causal = true;
  const CrossKv& kv = *ctx.cross_kv;
  Variable o;
  if (!kv.cache || kv.cache->length() == T) {
    o = ops::attention(q, kv.k, kv.v, p);  // training, or the first prefill: the new tokens are all there is
  } else {
    Tensor out = Tensor::empty({B, T, H, head_dim_});
    kv.cache->attend(q.data().contiguous(), p, out);
    o = Variable(out);
  }
  return wo_->forward(ops::reshape(o, {B, T, H * head_dim_}));
}

double CrossDecoderAttention::extra_flops_per_token(int64_t context) const {
  return 4.0 * static_cast<double>(cfg_.n_heads * head_dim_) * static_cast<double>(context);
}

}  // namespace sw::nn
