#include "nn/attention/kv_cache.h"

#include <algorithm>

#include "kernels/attention/decode_attention.h"

namespace sw::nn {

namespace ka = kernels::attention;

namespace {
// Split the cache across both cores once it is long enough for the merge to pay.
int segments_for(int64_t length) { return length >= 1024 ? 2 : 1; }

void check_append(const Tensor& k, const Tensor& v, int64_t batch, int64_t heads, int64_t dk, int64_t dv) {
  SW_CHECK(k.ndim() == 4 && k.dim(0) == batch && k.dim(2) == heads && k.dim(3) == dk, "kv_cache", "keys must be [",
           batch, ", T, ", heads, ", ", dk, "], got ", k.describe());
  SW_CHECK(v.ndim() == 4 && v.dim(0) == batch && v.dim(1) == k.dim(1) && v.dim(2) == heads && v.dim(3) == dv,
           "kv_cache", "values ", v.describe(), " do not match keys ", k.describe());
}
}  // namespace

KvCache::KvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v, DType dtype,
                 int64_t initial_capacity)
    : batch_(batch), heads_(kv_heads), dk_(head_dim_k), dv_(head_dim_v),
      capacity_(std::max<int64_t>(1, initial_capacity)), dtype_(dtype) {
  SW_CHECK(dtype == DType::f32 || dtype == DType::bf16, "kv_cache", "dtype must be f32 or bf16, got ", dtype_name(dtype));
  k_ = Tensor::zeros({batch_, capacity_, heads_, dk_}, dtype_);
  v_ = Tensor::zeros({batch_, capacity_, heads_, dv_}, dtype_);
}

void KvCache::grow(int64_t needed) {
  int64_t cap = capacity_;
  while (cap < needed) cap *= 2;
  Tensor k = Tensor::zeros({batch_, cap, heads_, dk_}, dtype_), v = Tensor::zeros({batch_, cap, heads_, dv_}, dtype_);
  if (length_ > 0) {
    k.slice(1, 0, length_).copy_from(k_.slice(1, 0, length_));
    v.slice(1, 0, length_).copy_from(v_.slice(1, 0, length_));
  }
  k_ = k, v_ = v, capacity_ = cap;
}

void KvCache::append(const Tensor& k_new, const Tensor& v_new) {
  check_append(k_new, v_new, batch_, heads_, dk_, dv_);
  int64_t t = k_new.dim(1);
  if (length_ + t > capacity_) grow(length_ + t);
  k_.slice(1, length_, length_ + t).copy_from(k_new);
  v_.slice(1, length_, length_ + t).copy_from(v_new);
  length_ += t;
}

void KvCache::attend(const Tensor& q, const ka::AttentionParams& p, Tensor& o) {
  ka::DecodeDims d;
  d.B = static_cast<int>(batch_), d.Tn = static_cast<int>(q.dim(1)), d.Hq = static_cast<int>(q.dim(2));
  d.Hkv = static_cast<int>(heads_), d.Dk = static_cast<int>(dk_), d.Dv = static_cast<int>(dv_);
  d.capacity = static_cast<int>(capacity_), d.length = static_cast<int>(length_);
  if (dtype_ == DType::f32)
    ka::decode_attention(q.data<float>(), k_.data<float>(), v_.data<float>(), d, p, segments_for(length_),
                         o.data<float>(), nullptr);
  else
    ka::decode_attention(q.data<float>(), reinterpret_cast<const uint16_t*>(k_.data<bf16>()),
                         reinterpret_cast<const uint16_t*>(v_.data<bf16>()), d, p, segments_for(length_),
                         o.data<float>(), nullptr);
}

KiviKvCache::KiviKvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v, int bits, int group,
                         int residual) {
  SW_CHECK(bits == 8 || bits == 4 || bits == 2, "kv_cache", "KIVI bits must be 8, 4 or 2, got ", bits);
  // Code rows live in 4-byte words (see allocate), so a row must fill whole words.
  SW_CHECK(head_dim_k * bits % 32 == 0 && head_dim_v * bits % 32 == 0, "kv_cache", "head dims ", head_dim_k, "/",
           head_dim_v, " must pack into whole 32-bit words at ", bits, " bits (a multiple of ", 32 / bits, ")");
  cache_.cfg.B = static_cast<int>(batch), cache_.cfg.Hkv = static_cast<int>(kv_heads);
  cache_.cfg.Dk = static_cast<int>(head_dim_k), cache_.cfg.Dv = static_cast<int>(head_dim_v);
  cache_.cfg.group = group, cache_.cfg.residual = residual, cache_.cfg.bits = bits;
  allocate(256);
}

// (Re)allocates every buffer for `capacity` tokens, keeping what is stored. Buffers are head-major
// ([B, Hkv, capacity, ...]), so the kept part of each is a slice along dim 2.
void KiviKvCache::allocate(int capacity) {
  ka::KiviConfig c = cache_.cfg;
  int old_cap = c.capacity;
  c.capacity = capacity;
  const int64_t B = c.B, H = c.Hkv, G = c.group, ring = c.residual + c.group;
  auto regrow = [&](Tensor& t, Shape shape, DType dt, int64_t keep) {
    Tensor n = Tensor::zeros(shape, dt);
    if (t.defined() && keep > 0) n.slice(2, 0, keep).copy_from(t.slice(2, 0, keep));
    t = n;
  };
  const int64_t kb = c.Dk * c.bits / 8, vb = c.Dv * c.bits / 8;
  // Codes are bytes; Tensor has no byte dtype, so they live in f32 storage, 4 code bytes a word
  // (rows are whole words: checked in the constructor).
  regrow(k_codes_, {B, H, capacity, kb / 4}, DType::f32, old_cap);
  regrow(v_codes_, {B, H, capacity, vb / 4}, DType::f32, old_cap);
  regrow(k_step_, {B, H, capacity / G, c.Dk}, DType::f32, old_cap / G);
  regrow(k_min_, {B, H, capacity / G, c.Dk}, DType::f32, old_cap / G);
  regrow(v_step_, {B, H, capacity}, DType::f32, old_cap);
  regrow(v_min_, {B, H, capacity}, DType::f32, old_cap);
  if (!k_recent_.defined()) {
    k_recent_ = Tensor::zeros({B, H, ring, c.Dk});
    v_recent_ = Tensor::zeros({B, H, ring, c.Dv});
  }
  cache_.cfg = c;
  cache_.k_codes = reinterpret_cast<uint8_t*>(k_codes_.data<float>());
  cache_.v_codes = reinterpret_cast<uint8_t*>(v_codes_.data<float>());
  cache_.k_step = k_step_.data<float>(), cache_.k_min = k_min_.data<float>();
  cache_.v_step = v_step_.data<float>(), cache_.v_min = v_min_.data<float>();
  cache_.k_recent = k_recent_.data<float>(), cache_.v_recent = v_recent_.data<float>();
}

void KiviKvCache::append(const Tensor& k_new, const Tensor& v_new) {
  const ka::KiviConfig& c = cache_.cfg;
  check_append(k_new, v_new, c.B, c.Hkv, c.Dk, c.Dv);
  int t = static_cast<int>(k_new.dim(1));
  if (cache_.length + t > c.capacity) {
    int cap = c.capacity;
    while (cap < cache_.length + t) cap *= 2;
    allocate(cap);
  }
  Tensor k = k_new.contiguous(), v = v_new.contiguous();
  ka::kivi_append(cache_, k.data<float>(), v.data<float>(), t);
}

void KiviKvCache::attend(const Tensor& q, const ka::AttentionParams& p, Tensor& o) {
  ka::kivi_decode_attention(q.data<float>(), cache_, static_cast<int>(q.dim(2)), static_cast<int>(q.dim(1)), p,
                            segments_for(cache_.length), o.data<float>(), nullptr);
}

int64_t KiviKvCache::bytes() const {
  int64_t b = 0;
  for (const Tensor* t : {&k_codes_, &v_codes_, &k_step_, &k_min_, &v_step_, &v_min_, &k_recent_, &v_recent_})
    b += static_cast<int64_t>(t->nbytes());
  return b;
}

}  // namespace sw::nn
