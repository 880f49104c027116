// Lightning attention ops (Lightning Attention-2 / MiniMax-01, kernels/linear/lightning_attention.h):
// causal linear attention with one fixed decay lambda_h = exp(g_h) per head,
//   S_t = lambda_h S_{t-1} + k_t v_t^T,   o_t = S_t^T (scale q_t),
// computed block by block (intra-block masked products + inter-block state), with its single-token
// decode step. Kept apart from ops.h so that only the layers that use it see it.
#pragma once

#include "autograd/variable.h"
#include "kernels/linear/lightning_attention.h"

namespace sw::ops {

struct LightningOutput {
  Variable o;      // [B, T, H, V]
  Variable state;  // [B, H, K, V] after the last token
};

// The sequence op. Optional initial state h0 and the final state as a second output, both
// differentiable (and g too: dg is summed over batch and time), so a layer can train over one
// sequence or continue from a carried state. When a gradient will be needed the forward keeps the
// state entering each block for the backward; otherwise nothing is saved.
LightningOutput lightning_attention(const Variable& q,   // [B, T, H, K]
                                    const Variable& k,   // [B, T, H, K]
                                    const Variable& v,   // [B, T, H, V]
                                    const Variable& g,   // [H] log decay per head (<= 0)
                                    const Variable* h0,  // [B, H, K, V], or null (zero state)
                                    double scale,
                                    int64_t block_size = kernels::kLightningDefaultBlock);

// One decode token for every (batch, head): advances `state` [B, H, K, V] in place (the GLA
// family's gla_step in its per-head-constant mode, the same recurrence) and returns o [B, 1, H, V].
// No autograd.
Tensor lightning_attention_step(const Tensor& q,  // [B, 1, H, K]
                                const Tensor& k,  // [B, 1, H, K]
                                const Tensor& v,  // [B, 1, H, V]
                                const Tensor& g,  // [H]
                                Tensor& state,    // [B, H, K, V] in/out
                                double scale);

}  // namespace sw::ops
