// f64 reference attention, written straight from the definition: an explicit [Tq, Tk] visibility
// mask built from AttentionParams (see kernels/attention/attention_params.h), a full score matrix,
// a max-subtracted softmax with the optional learned sink as an extra value-less logit, and the
// analytic backward (dS = P * (dP - delta), delta_i = dO_i . O_i - dlse_i). Also the KIVI fake
// quantisation, for the quantised cache's tests. Slow on purpose; only for tests.
//
// Layout as the kernels: q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv],
// o [B, Tq, Hq, Dv], lse [B, Hq, Tq].
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/attention/attention_params.h"

namespace sw::kernels::ref {

using attention::AttentionDims;
using attention::AttentionParams;

// Visibility mask of batch b, query head h: mask[i * Tk + j] = 1 iff key j is visible to query i.
std::vector<uint8_t> attention_mask_ref(const AttentionParams& p, const AttentionDims& d, int b, int h);

// Forward. p.sink_logits is ignored; the learned sinks come in f64 as sink_logits ([Hq] or nullptr).
void attention_forward_ref(const double* q,            // [B, Tq, Hq, Dk]
                           const double* k,            // [B, Tk, Hkv, Dk]
                           const double* v,            // [B, Tk, Hkv, Dv]
                           const double* sink_logits,  // [Hq] or nullptr
                           const AttentionDims& d, const AttentionParams& p,
                           double* o,     // [B, Tq, Hq, Dv]
                           double* lse);  // [B, Hq, Tq]

// Backward of (o, lse) with respect to q, k, v and the sink logits; overwrites its outputs.
void attention_backward_ref(const double* q,            // [B, Tq, Hq, Dk]
                            const double* k,            // [B, Tk, Hkv, Dk]
                            const double* v,            // [B, Tk, Hkv, Dv]
                            const double* sink_logits,  // [Hq] or nullptr
                            const double* dout,         // [B, Tq, Hq, Dv]
                            const double* dlse,         // [B, Hq, Tq] or nullptr
                            const AttentionDims& d, const AttentionParams& p,
                            double* dq,      // [B, Tq, Hq, Dk]
                            double* dk,      // [B, Tk, Hkv, Dk]
                            double* dv,      // [B, Tk, Hkv, Dv]
                            double* dsink);  // [Hq] or nullptr

// Asymmetric min-max quantisation of n values x[i * stride] with 2^bits levels, replaced in place
// by their dequantised values; returns the step (scale).
double fake_quantize_minmax_ref(double* x, int n, int stride, int bits);

// KIVI fake quantisation of a cache of L tokens: keys [0, nq_k) per channel in groups of `group`
// tokens, values [0, nq_v) per token (one scale/zero per token and head), the rest untouched, with
// nq_k = max(0, (L - residual) / group * group) and nq_v = max(0, L - residual).
void kivi_fake_quantize_ref(double* k,  // [B, L, Hkv, Dk] in place
                            double* v,  // [B, L, Hkv, Dv] in place
                            int B, int L, int Hkv, int Dk, int Dv, int group, int residual, int bits);

}  // namespace sw::kernels::ref
