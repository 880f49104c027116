// SageAttention-style forward (v1, int8 QK^T): exact softmax attention with quantised logits.
//
//   k_s = k - mean_over_tokens(k) per (batch, kv head)   ("smooth K": shifts each row's logits by
//                                                          the constant q . mean, so exact under softmax)
//   qs  = q * scale * log2(e)
//   per query tile (64 rows):          sQ = max|qs| / 127,  q8 = round_half_away(qs / sQ)
//   per aligned key block (64 tokens): sK = max|k_s| / 127, k8 = round_half_away(k_s / sK)
//   logits (log2 units) = (q8 . k8 as an exact integer dot product) * sQ * sK
//   online softmax and P.V in fp32 (V unquantised), as flash_attention_forward.
// The returned lse is corrected by + scale * q . mean(k), so it is the lse of the unsmoothed logits;
// learned sink logits are shifted by the same per-row constant. Mask options as attention_params.h.
// Error vs exact attention is measured in the tests (see attention_test.cpp, Sage section).
// Scratch: slot 0 of every OpenMP thread (tiles), slot 1 of the calling thread (key means).
//
// CPU note: the int8 x int8 products are accumulated exactly (|sum| <= Dk * 127^2 < 2^24 for
// Dk <= 1040, so fp32 FMA on integer-valued operands equals int32 accumulation bit for bit); they
// run on the FMA units, so this kernel reproduces Sage's numerics but is not faster than
// flash_attention_forward on this CPU (an AVX512-VNNI int8 path would be).
//
// Layout: q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv], o [B, Tq, Hq, Dv], lse [B, Hq, Tq].
#pragma once

#include "kernels/attention/attention_params.h"

namespace sw::kernels::attention {

// Forward only. smooth_k = false skips the mean subtraction (to show what smoothing buys).
void sage_attention_forward(const float* q,  // [B, Tq, Hq, Dk]
                            const float* k,  // [B, Tk, Hkv, Dk]
                            const float* v,  // [B, Tk, Hkv, Dv]
                            const AttentionDims& dims, const AttentionParams& params, bool smooth_k,
                            float* o,     // [B, Tq, Hq, Dv]
                            float* lse);  // [B, Hq, Tq] or nullptr

}  // namespace sw::kernels::attention
