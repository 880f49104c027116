// KIVI-style quantised KV cache (asymmetric min-max, keys per channel, values per token) and
// decode attention over it.
//
// Quantisation of n values with b bits: step = (max - min) / (2^b - 1),
// code = clamp(round((x - min) / step), 0, 2^b - 1), x_hat = code * step + min (|x_hat - x| <= step/2).
//   keys:   per channel, in groups of G consecutive tokens (one step/min per channel per group);
//   values: per token (one step/min per token and head, over its Dv channels).
// The most recent tokens stay in fp32: with L tokens stored, keys [0, nq_k) are quantised with
// nq_k = max(0, (L - R) / G * G) (a group of G is quantised when the fp32 residual reaches R + G,
// so at least the last R keys are exact) and values [0, nq_v) with nq_v = max(0, L - R).
// Must match ref::kivi_fake_quantize_ref + ref::attention_forward_ref on the dequantised cache.
//
// Buffers are owned by the caller (sizes from kivi_buffer_sizes); codes are bit-packed along the
// channel axis, lowest bits first (code c of a row at bit (c * b) % 8 of byte c * b / 8).
// Scratch: kivi_decode_attention as decode_attention (slots 0-2); kivi_append uses slot 0.
// Layout (head-major so that one head's codes are contiguous):
//   k_codes [B, Hkv, capacity, Dk * b / 8]   k_step, k_min [B, Hkv, capacity / G, Dk]
//   v_codes [B, Hkv, capacity, Dv * b / 8]   v_step, v_min [B, Hkv, capacity]
//   k_recent [B, Hkv, R + G, Dk], v_recent [B, Hkv, R + G, Dv]: rings, token t in slot t % (R + G).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/attention/attention_params.h"

namespace sw::kernels::attention {

struct KiviConfig {
  int B = 1, Hkv = 1, Dk = 0, Dv = 0;
  int capacity = 0;  // max tokens; a multiple of group
  int group = 32;    // G: tokens per key quantisation group
  int residual = 32; // R: most recent tokens kept in fp32
  int bits = 8;      // 8, 4 or 2; Dk * bits and Dv * bits multiples of 8
};

struct KiviSizes {  // element counts of each buffer
  size_t k_codes, k_step, k_min, v_codes, v_step, v_min, k_recent, v_recent;
};

KiviSizes kivi_buffer_sizes(const KiviConfig& c);

struct KiviCache {
  KiviConfig cfg;
  uint8_t* k_codes = nullptr;  // [B, Hkv, capacity, Dk * bits / 8]
  float* k_step = nullptr;     // [B, Hkv, capacity / group, Dk]
  float* k_min = nullptr;      // [B, Hkv, capacity / group, Dk]
  uint8_t* v_codes = nullptr;  // [B, Hkv, capacity, Dv * bits / 8]
  float* v_step = nullptr;     // [B, Hkv, capacity]
  float* v_min = nullptr;      // [B, Hkv, capacity]
  float* k_recent = nullptr;   // [B, Hkv, residual + group, Dk]
  float* v_recent = nullptr;   // [B, Hkv, residual + group, Dv]
  int length = 0;              // tokens stored (all sequences of the batch have the same length)
};

// Quantised-key count and quantised-value count for a cache holding `length` tokens.
inline int kivi_quantized_keys(const KiviConfig& c, int length) {
  return length > c.residual ? (length - c.residual) / c.group * c.group : 0;
}
inline int kivi_quantized_values(const KiviConfig& c, int length) { return length > c.residual ? length - c.residual : 0; }

// Appends T tokens to every sequence, quantising key groups and old values as the fp32 windows
// fill; cache.length += T (must stay <= capacity).
void kivi_append(KiviCache& cache,
                 const float* k,  // [B, T, Hkv, Dk]
                 const float* v,  // [B, T, Hkv, Dv]
                 int T);

// The cache as fp32 (quantised tokens dequantised, recent tokens copied), for tests and debugging.
void kivi_dequantize(const KiviCache& cache,
                     float* k,   // [B, length, Hkv, Dk]
                     float* v);  // [B, length, Hkv, Dv]

// Decode attention of Tn new tokens (already appended; positions length - Tn + t) over the cache,
// with the options of decode_attention (window, sinks, learned sinks, split-KV segments).
void kivi_decode_attention(const float* q,  // [B, Tn, Hq, Dk]
                           const KiviCache& cache, int Hq, int Tn, const AttentionParams& params, int num_segments,
                           float* o,     // [B, Tn, Hq, Dv]
                           float* lse);  // [B, Hq, Tn] or nullptr

}  // namespace sw::kernels::attention
