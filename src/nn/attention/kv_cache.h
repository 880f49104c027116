// KV caches for one attention layer behind one interface: append the new keys/values, then attend
// the new queries over everything cached. Storage kinds:
//   KvCache:     [B, capacity, Hkv, D] in f32 or bf16 (half the bytes decode has to read);
//   KiviKvCache: KIVI quantisation (keys per channel in groups of G tokens, values per token) at
//                8/4/2 bits with the most recent R tokens in f32.
// All grow as needed (capacity doubles).
#pragma once

#include "kernels/attention/attention_params.h"
#include "kernels/attention/kivi_cache.h"
#include "nn/mixer.h"

namespace sw::nn {

class AttentionCache : public LayerState {
 public:
  virtual void append(const Tensor& k_new, const Tensor& v_new) = 0;  // [B, T, Hkv, Dk], [B, T, Hkv, Dv] f32
  virtual int64_t length() const = 0;
  // o [B, Tn, Hq, Dv] = attention of q [B, Tn, Hq, Dk] (the last Tn cached tokens' queries) over the cache.
  // Not const: a cache with an eviction policy (nn/attention/kv_policy.h) learns from what it reads.
  virtual void attend(const Tensor& q, const kernels::attention::AttentionParams& p, Tensor& o) = 0;
  // True when the cache must see the prompt's queries too (a policy that keeps statistics or bounds
  // memory from the first token): the layer then runs even the first prefill through attend().
  virtual bool attends_prefill() const { return false; }
};

class KvCache : public AttentionCache {
 public:
  KvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v, DType dtype,
          int64_t initial_capacity = 256);
  void append(const Tensor& k_new, const Tensor& v_new) override;
  void attend(const Tensor& q, const kernels::attention::AttentionParams& p, Tensor& o) override;
  int64_t length() const override { return length_; }
  int64_t capacity() const { return capacity_; }
  DType dtype() const { return dtype_; }
  // f32 copies of the cached rows [B, length, Hkv, D] (for kernels that need the keys whole).
  Tensor keys() const { return k_.slice(1, 0, length_).to(DType::f32).contiguous(); }
  Tensor values() const { return v_.slice(1, 0, length_).to(DType::f32).contiguous(); }
  int64_t bytes() const override { return static_cast<int64_t>(k_.nbytes() + v_.nbytes()); }
  const char* kind() const override { return "kv"; }

 private:
  void grow(int64_t needed);
  int64_t batch_, heads_, dk_, dv_, length_ = 0, capacity_;
  DType dtype_;
  Tensor k_, v_;  // [B, capacity, Hkv, D]; rows >= length are unused
};

class KiviKvCache : public AttentionCache {
 public:
  KiviKvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v, int bits, int group = 32,
              int residual = 32);
  void append(const Tensor& k_new, const Tensor& v_new) override;
  void attend(const Tensor& q, const kernels::attention::AttentionParams& p, Tensor& o) override;
  int64_t length() const override { return cache_.length; }
  int64_t bytes() const override;
  const char* kind() const override { return "kv-kivi"; }

 private:
  void allocate(int capacity);
  kernels::attention::KiviCache cache_;
  Tensor k_codes_, k_step_, k_min_, v_codes_, v_step_, v_min_, k_recent_, v_recent_;
};

}  // namespace sw::nn
