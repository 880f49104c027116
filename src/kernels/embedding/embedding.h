// Embedding lookup: y[i] = table[ids[i]]. Backward scatters dy rows into the table gradient; threads
// own disjoint column ranges so there are no races and the sum order is fixed (deterministic).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace sw::kernels {

void embedding_fwd(const float* table,  // [V, D]
                   const int32_t* ids,  // [N], each in [0, V) (checked by the op)
                   float* y,            // [N, D]
                   int64_t n, int64_t dim);
void embedding_fwd_bf16(const bf16* table, const int32_t* ids, float* y, int64_t n, int64_t dim);
void embedding_bwd(const int32_t* ids, const float* dy,  // [N], [N, D]
                   float* dtable,                        // [V, D], accumulated into (+=)
                   int64_t n, int64_t dim);

}  // namespace sw::kernels
