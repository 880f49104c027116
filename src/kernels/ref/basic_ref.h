// f64 references for the basic kernels, written straight from the definitions with plain loops.
// They are the spec: the op table checks every fp32 kernel against them, and differentiates them
// by finite differences to check every backward. Shapes are as in the matching kernel headers.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/elementwise/activations.h"

namespace sw::kernels::ref {

using Vec = std::vector<double>;

Vec unary(Unary op, const Vec& x);
Vec swiglu(const Vec& gate, const Vec& up);
Vec matmul(const Vec& a, const Vec& b, int64_t m, int64_t n, int64_t k, bool trans_b);  // a [m,k]; b [k,n] or [n,k]
Vec rmsnorm(const Vec& x, const Vec* w, int64_t rows, int64_t dim, double eps);
Vec layernorm(const Vec& x, const Vec* w, const Vec* b, int64_t rows, int64_t dim, double eps);
Vec l2norm(const Vec& x, int64_t rows, int64_t dim, double eps);
Vec softmax(const Vec& x, int64_t rows, int64_t dim);
Vec log_softmax(const Vec& x, int64_t rows, int64_t dim);
Vec rope(const Vec& x, const std::vector<int32_t>& pos, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
         int64_t rotary_dim, double base);
// Returns y [B,T,C] followed by the final state [B,W-1,C].
Vec causal_conv1d(const Vec& x, const Vec& w, const Vec* bias, const Vec* state0, int64_t batch, int64_t seq,
                  int64_t channels, int64_t width);
Vec embedding(const Vec& table, const std::vector<int32_t>& ids, int64_t dim);
// Mean over non-ignored rows of -log softmax(h W^T)[target].
double cross_entropy(const Vec& h, const Vec& w, const std::vector<int32_t>& targets, int64_t n, int64_t dim,
                     int64_t vocab);
Vec sum_axis(const Vec& x, int64_t outer, int64_t n, int64_t inner);
Vec cumsum(const Vec& x, int64_t outer, int64_t n, int64_t inner);

}  // namespace sw::kernels::ref
