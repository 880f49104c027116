#include "kernels/attention/decode_attention.h"

#include "core/error.h"
#include "kernels/attention/decode_core.h"

namespace sw::kernels::attention {
namespace {

// Cache rows [B, L_capacity, Hkv, D] of element type T, handed to the core as fp32.
template <class T>
struct CacheSource {
  const T* k;
  const T* v;
  int capacity, Hkv, Dk, Dv;

  size_t row(int b, int hk, int j) const {
    return (static_cast<size_t>(b) * capacity + j) * Hkv + hk;
  }
  const float* key(int b, int hk, int j, float* tmp) const { return convert(k + row(b, hk, j) * Dk, Dk, tmp); }
  const float* value(int b, int hk, int j, float* tmp) const { return convert(v + row(b, hk, j) * Dv, Dv, tmp); }

  static const float* convert(const float* src, int, float*) { return src; }
  static const float* convert(const uint16_t* src, int n, float* tmp) {
#pragma omp simd
    for (int d = 0; d < n; ++d) tmp[d] = std::bit_cast<float>(static_cast<uint32_t>(src[d]) << 16);
    return tmp;
  }
};

template <class T>
void decode_any(const float* q, const T* k_cache, const T* v_cache, const DecodeDims& d, const AttentionParams& p,
                int num_segments, float* o, float* lse) {
  SW_DASSERT(d.Hkv > 0 && d.Hq % d.Hkv == 0 && d.Tn <= d.length && d.length <= d.capacity);
  const CacheSource<T> src{k_cache, v_cache, d.capacity, d.Hkv, d.Dk, d.Dv};
  const detail::DecodeShape shape{d.B, d.Tn, d.Hq, d.Hkv, d.Dk, d.Dv, d.length};
  detail::decode_attention_core(q, src, shape, p, num_segments, o, lse);
}

}  // namespace

void convert_to_bf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

void decode_attention(const float* q, const float* k_cache, const float* v_cache, const DecodeDims& dims,
                      const AttentionParams& params, int num_segments, float* o, float* lse) {
  decode_any(q, k_cache, v_cache, dims, params, num_segments, o, lse);
}

void decode_attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, const DecodeDims& dims,
                      const AttentionParams& params, int num_segments, float* o, float* lse) {
  decode_any(q, k_cache, v_cache, dims, params, num_segments, o, lse);
}

}  // namespace sw::kernels::attention
