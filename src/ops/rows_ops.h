// Differentiable row gather and scatter: moving a subset of the rows of a [N, D] matrix (tokens of
// a flattened [B, T, D] batch) out and back, as Mixture-of-Depths routes some of a sequence's tokens
// through a block (models/mixture_of_depths.h). Both are plain row copies written with the MoE
// dispatch kernels (kernels/moe/moe_dispatch.h) at one slot per token: the gather is moe_gather,
// the scatter is a combine with unit gates; each one's backward is the other.
#pragma once

#include "autograd/variable.h"

namespace sw::ops {

// y [M, D] = x[rows[m], :].   x [N, D] f32; rows i32 [M], distinct, each in [0, N).
// Backward: dx[rows[m]] = dy[m], other rows 0.
Variable gather_rows(const Variable& x, const Tensor& rows);

// y [N, D]: y[rows[m], :] = src[m, :], every other row 0.   src [M, D] f32; rows as above.
// Backward: dsrc[m] = dy[rows[m]].
Variable scatter_rows(const Variable& src, const Tensor& rows, int64_t n);

}  // namespace sw::ops
