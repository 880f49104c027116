// Attention ops (kept apart from ops.h so that only attention users see the kernel's params).
#pragma once

#include "autograd/variable.h"
#include "kernels/attention/attention_params.h"

namespace sw::ops {

// q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv] -> o [B, Tq, Hq, Dv]. Masks, windows,
// sinks and block-sparse layouts come from params; learned per-head sink logits [Hq] are a
// differentiable input here (params.sink_logits is ignored when sink_logits is given).
Variable attention(const Variable& q, const Variable& k, const Variable& v,
                   const kernels::attention::AttentionParams& params, const Variable* sink_logits = nullptr);

// SageAttention (int8 QK^T, kernels/attention/sage_attention.h): same shapes and params as
// attention(), inference only (no backward: an input that requires a gradient is an error).
Variable sage_attention(const Variable& q, const Variable& k, const Variable& v,
                        const kernels::attention::AttentionParams& params);

}  // namespace sw::ops
