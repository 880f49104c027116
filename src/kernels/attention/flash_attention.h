// IO-aware tiled exact attention (FlashAttention-2 on CPU), forward and backward.
//
// Computes o = softmax(scale * q k^T + mask [+ learned sink column]) v per (batch, query head),
// with GQA/MQA (query head h reads kv head h / (Hq / Hkv)), causal masking with a query position
// offset, sliding window, StreamingLLM sink tokens, learned sink logits and block-sparse layouts
// (see attention_params.h for the exact visibility rule). Must match ref::attention_forward_ref /
// ref::attention_backward_ref (explicit-mask f64 attention).
//
// Algorithm: per (b, h, 64-row query tile) an online softmax over 64-key chunks (running max and
// sum, one rescale at the end), never a [Tq, Tk] matrix; fully masked chunks and absent layout
// blocks are skipped. The backward recomputes probabilities from lse in two race-free passes:
// one parallel over (b, kv head, key tile) producing dk and dv (summing the query heads of the GQA
// group), one parallel over (b, query head, query tile) producing dq. Extra memory: a few tiles
// per thread (scratch slot 0 of every OpenMP thread), independent of the sequence length.
//
// Layout: q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv], o [B, Tq, Hq, Dv],
// lse [B, Hq, Tq] (natural log of the softmax denominator, learned sink included).
#pragma once

#include "kernels/attention/attention_params.h"

namespace sw::kernels::attention {

// Writes o and (if lse != nullptr) lse.
void flash_attention_forward(const float* q,  // [B, Tq, Hq, Dk]
                             const float* k,  // [B, Tk, Hkv, Dk]
                             const float* v,  // [B, Tk, Hkv, Dv]
                             const AttentionDims& dims, const AttentionParams& params,
                             float* o,     // [B, Tq, Hq, Dv]
                             float* lse);  // [B, Hq, Tq] or nullptr

// Overwrites dq, dk, dv and (when params.sink_logits and dsink are non-null) dsink.
// dlse (optional) is the gradient flowing into lse, for callers that merge partial attentions.
void flash_attention_backward(const float* q,     // [B, Tq, Hq, Dk]
                              const float* k,     // [B, Tk, Hkv, Dk]
                              const float* v,     // [B, Tk, Hkv, Dv]
                              const float* o,     // [B, Tq, Hq, Dv] forward output
                              const float* lse,   // [B, Hq, Tq] forward lse
                              const float* dout,  // [B, Tq, Hq, Dv]
                              const float* dlse,  // [B, Hq, Tq] or nullptr
                              const AttentionDims& dims, const AttentionParams& params,
                              float* dq,      // [B, Tq, Hq, Dk]
                              float* dk,      // [B, Tk, Hkv, Dk]
                              float* dv,      // [B, Tk, Hkv, Dv]
                              float* dsink);  // [Hq] or nullptr

}  // namespace sw::kernels::attention
