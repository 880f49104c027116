// MLA attention in the absorbed form (DeepSeek-V2 inference, attn_impl = "absorb"), over a cache that
// holds per token only the normalised KV latent c (d_c) and the shared rotary key k_r (d_rope):
//
//   score_ij = scale * (q_lat_i . c_j + q_rope_i . k_r_j)      q_lat_i = W_UK,i^T q_nope,i (absorbed)
//   out_i    = sum_j softmax_j(score_ij) c_j                   (the caller applies W_UV,i and W_O)
//
// It is MQA with one key head of width d_c + d_rope whose values are the first d_c channels of the
// same cache rows, so nothing per head is cached. Query t of the Tn new tokens sits at position
// q_offset + t and sees keys j <= q_offset + t. Reference: naive MLA with materialised per-head K, V
// (tests/models/mla_test.cpp checks the two agree).
#pragma once

#include <cstdint>

namespace sw::kernels::attention {

struct MlaDecodeDims {
  int64_t batch = 1, new_tokens = 1, heads = 1;
  int64_t latent = 0, rope = 0;  // d_c, d_rope; cache rows are latent + rope wide
  int64_t capacity = 0, length = 0;  // rows allocated / valid per sequence (the new ones included)
};

void mla_absorbed_attention(const float* q_lat,   // [B, Tn, H, d_c]
                            const float* q_rope,  // [B, Tn, H, d_rope]
                            const float* cache,   // [B, capacity, d_c + d_rope]
                            const MlaDecodeDims& d, float scale,
                            float* out_lat);      // [B, Tn, H, d_c]

}  // namespace sw::kernels::attention
