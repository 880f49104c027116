#include "nn/attention/kv_cache.h"

#include <algorithm>

namespace sw::nn {

KvCache::KvCache(int64_t batch, int64_t kv_heads, int64_t head_dim_k, int64_t head_dim_v, DType dtype,
                 int64_t initial_capacity)
    : batch_(batch), heads_(kv_heads), dk_(head_dim_k), dv_(head_dim_v), capacity_(std::max<int64_t>(1, initial_capacity)),
      dtype_(dtype) {
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
  SW_CHECK(k_new.ndim() == 4 && k_new.dim(0) == batch_ && k_new.dim(2) == heads_ && k_new.dim(3) == dk_, "kv_cache",
           "keys must be [", batch_, ", T, ", heads_, ", ", dk_, "], got ", k_new.describe());
  SW_CHECK(v_new.ndim() == 4 && v_new.dim(1) == k_new.dim(1) && v_new.dim(3) == dv_, "kv_cache", "values ",
           v_new.describe(), " do not match keys ", k_new.describe());
  int64_t t = k_new.dim(1);
  if (length_ + t > capacity_) grow(length_ + t);
  k_.slice(1, length_, length_ + t).copy_from(k_new);
  v_.slice(1, length_, length_ + t).copy_from(v_new);
  length_ += t;
}

}  // namespace sw::nn
