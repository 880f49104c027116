// Cross-entropy fused with the output projection (the LM head).
//
//   logits = h @ W^T  ([N, V]),  loss_i = logsumexp(logits_i) - logits_i[target_i]
//
// The [N, V] logits are never all in memory: rows are processed in blocks of row_block and the
// vocabulary in chunks of vocab_chunk, with an online log-sum-exp across chunks (the same trick as
// flash attention). Memory is O(row_block * vocab_chunk). The backward recomputes each chunk's
// logits from h and W and the saved lse. A target < 0 is ignored (loss 0, no gradient).
// Reference: kernels/ref/basic_ref.h.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace sw::kernels {

struct FusedCrossEntropyDims {
  int64_t n = 0, dim = 0, vocab = 0;
  int64_t row_block = 1024, vocab_chunk = 4096;
};

void fused_cross_entropy_fwd(const float* h,        // [N, D]
                             const void* w,         // [V, D] (f32 or bf16 per w_type)
                             DType w_type,
                             const int32_t* targets,  // [N]
                             float* loss,           // [N] per-row loss (0 where ignored)
                             float* lse,            // [N] saved for backward
                             const FusedCrossEntropyDims& d);

// dloss: [N] gradient of the total objective w.r.t. each row's loss (e.g. 1/count for the mean).
void fused_cross_entropy_bwd(const float* h, const void* w, DType w_type, const int32_t* targets,
                             const float* lse,    // [N]
                             const float* dloss,  // [N]
                             float* dh,           // [N, D] (written)
                             float* dw,           // [V, D] (written) or nullptr
                             const FusedCrossEntropyDims& d);

}  // namespace sw::kernels
