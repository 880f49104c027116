// Decode attention over a KV cache (flash-decoding / split-KV), fp32 or bf16 cache elements.
//
// The Tn new query tokens of each sequence (already appended to the cache) sit at positions
// length - Tn + t and attend to the cached keys 0..length-1 under the same rule as the tiled
// kernel (causal among the new tokens, window, StreamingLLM sinks, learned sink logits; see
// attention_params.h). params.q_offset and params.layout are not used: positions come from the
// cache length. Must equal the last Tn rows of flash_attention_forward over the same keys (and
// ref::attention_forward_ref with q_offset = length - Tn).
//
// Split-KV: the visible keys of each (batch, kv head) are cut into segments handled by different
// threads, each producing (max, sum, unnormalised output) that are merged by log-sum-exp, so a
// single long sequence keeps both cores busy. num_segments = 0 picks a count from the thread count.
// Scratch: slots 0 and 2 of every OpenMP thread, slot 1 of the calling thread (the partials:
// B * segments * Hq * Tn * (Dv + 2) floats).
//
// Layout: q [B, Tn, Hq, Dk]; cache k [B, L_capacity, Hkv, Dk], v [B, L_capacity, Hkv, Dv]
// (length <= L_capacity valid rows); o [B, Tn, Hq, Dv]; lse [B, Hq, Tn].
// bf16 elements are the upper 16 bits of an fp32 (round-to-nearest-even on store).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "kernels/attention/attention_params.h"

namespace sw::kernels::attention {

inline uint16_t float_to_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// dst[i] = bf16(src[i]) for i < n.
void convert_to_bf16(const float* src, uint16_t* dst, size_t n);

struct DecodeDims {
  int B = 1;
  int Tn = 1;        // new query tokens per sequence
  int Hq = 1, Hkv = 1;
  int Dk = 0, Dv = 0;
  int capacity = 0;  // L_capacity: rows allocated per sequence in the cache
  int length = 0;    // valid cached tokens (the new ones included), Tn <= length <= capacity
};

// Writes o and (if lse != nullptr) lse.
void decode_attention(const float* q,        // [B, Tn, Hq, Dk]
                      const float* k_cache,  // [B, L_capacity, Hkv, Dk]
                      const float* v_cache,  // [B, L_capacity, Hkv, Dv]
                      const DecodeDims& dims, const AttentionParams& params, int num_segments,
                      float* o,     // [B, Tn, Hq, Dv]
                      float* lse);  // [B, Hq, Tn] or nullptr

void decode_attention(const float* q,           // [B, Tn, Hq, Dk]
                      const uint16_t* k_cache,  // [B, L_capacity, Hkv, Dk] bf16
                      const uint16_t* v_cache,  // [B, L_capacity, Hkv, Dv] bf16
                      const DecodeDims& dims, const AttentionParams& params, int num_segments,
                      float* o,     // [B, Tn, Hq, Dv]
                      float* lse);  // [B, Hq, Tn] or nullptr

}  // namespace sw::kernels::attention
