// KV cache for one attention layer: keys and values of every past token, [B, capacity, Hkv, D],
// growable (capacity doubles), stored as f32 or bf16 (half the bytes decode has to read).
#pragma once

#include "nn/mixer.h"

namespace sw::nn {

class KvCache : public LayerState {
 public:
  KvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v, DType dtype,
          int64_t initial_capacity = 256);
  // Appends k_new [B, T, Hkv, Dk] and v_new [B, T, Hkv, Dv] (f32), converting to the cache dtype.
  void append(const Tensor& k_new, const Tensor& v_new);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  const Tensor& keys() const { return k_; }  // [B, capacity, Hkv, Dk]; rows >= length are garbage
  const Tensor& values() const { return v_; }
  DType dtype() const { return dtype_; }
  int64_t bytes() const override { return static_cast<int64_t>(k_.nbytes() + v_.nbytes()); }
  const char* kind() const override { return "kv"; }

 private:
  void grow(int64_t needed);
  int64_t batch_, heads_, dk_, dv_, length_ = 0, capacity_;
  DType dtype_;
  Tensor k_, v_;
};

}  // namespace sw::nn
