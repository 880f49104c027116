// Differentiable ops: validate arguments (errors open with "[op]" and name the shapes), pick a
// kernel, record the backward on the tape. Inputs may be strided views; ops make them contiguous.
// Activations are fp32; weights may be bf16 where noted. Every op here has an entry in the op
// table (bench/op_table.cpp) that checks it against its f64 reference, its gradient by finite
// differences, and times it.
#pragma once

#include <optional>
#include <vector>

#include "autograd/variable.h"
#include "kernels/elementwise/activations.h"

namespace sw::ops {

// ---- elementwise (binary ops broadcast numpy-style) ----
Variable add(const Variable& a, const Variable& b);
Variable sub(const Variable& a, const Variable& b);
Variable mul(const Variable& a, const Variable& b);
Variable scale(const Variable& x, double s);
Variable add_scalar(const Variable& x, double s);
Variable unary(kernels::Unary op, const Variable& x);
inline Variable silu(const Variable& x) { return unary(kernels::Unary::silu, x); }
inline Variable gelu(const Variable& x) { return unary(kernels::Unary::gelu, x); }
inline Variable sigmoid(const Variable& x) { return unary(kernels::Unary::sigmoid, x); }
inline Variable softplus(const Variable& x) { return unary(kernels::Unary::softplus, x); }
inline Variable exp(const Variable& x) { return unary(kernels::Unary::exp, x); }
inline Variable log(const Variable& x) { return unary(kernels::Unary::log, x); }
inline Variable relu(const Variable& x) { return unary(kernels::Unary::relu, x); }
inline Variable square(const Variable& x) { return unary(kernels::Unary::square, x); }
Variable swiglu(const Variable& gate, const Variable& up);  // silu(gate) * up, fused

// ---- linear algebra ----
// y[..., out] = x[..., in] @ w[out, in]^T (+ bias[out]). w may be f32 or bf16. compute = bf16 runs the
// GEMM on bf16 inputs (fp32 accumulation) even for an f32 weight: mixed-precision training.
Variable linear(const Variable& x, const Variable& w, const Variable* bias = nullptr, DType compute = DType::f32);
// Batched matmul: a [..., m, k] @ b [..., k, n] (or b^T when trans_b: b [..., n, k]); same leading dims.
Variable matmul(const Variable& a, const Variable& b, bool trans_b = false);

// ---- lookup and losses ----
Variable embedding(const Variable& table, const Tensor& ids);  // table [V, D] f32 or bf16, ids i32 [...]
// Mean cross-entropy of softmax(h @ w^T) against targets (-1 = ignore), never materialising the
// [N, V] logits. h [N, D], w [V, D], targets i32 [N]. Returns a scalar.
struct CrossEntropyOptions {
  int64_t row_block = 1024, vocab_chunk = 4096;
  DType compute = DType::f32;
};
Variable fused_cross_entropy(const Variable& h, const Variable& w, const Tensor& targets,
                             const CrossEntropyOptions& opts = {});

// ---- normalisation and softmax (over the last dim) ----
Variable rmsnorm(const Variable& x, const Variable* w, double eps = 1e-6);
Variable layernorm(const Variable& x, const Variable* w, const Variable* b, double eps = 1e-5);
Variable l2norm(const Variable& x, double eps = 1e-6);
Variable softmax(const Variable& x);
Variable log_softmax(const Variable& x);

// ---- positions and sequence ----
// x [B, T, H, D]; positions i32 [T]; rotates the first rotary_dim channels of each head.
Variable rope(const Variable& x, const Tensor& positions, int64_t rotary_dim, double base);
// x [B, T, C], w [C, W], bias [C] or null; state0 [B, W-1, C] or null. When state_out is given it
// receives the final state (not differentiated: decoding carries it, training starts from zeros).
Variable causal_conv1d(const Variable& x, const Variable& w, const Variable* bias, const Variable* state0,
                       Tensor* state_out = nullptr);

// ---- reductions and scans ----
Variable sum(const Variable& x);                // all elements -> [1]
Variable mean(const Variable& x);               // all elements -> [1]
Variable sum(const Variable& x, int64_t dim);   // removes dim
Variable mean(const Variable& x, int64_t dim);  // removes dim
Variable cumsum(const Variable& x, int64_t dim);

// ---- shape (views where possible; gradients flow) ----
Variable reshape(const Variable& x, const Shape& shape);
Variable transpose(const Variable& x, int64_t d0, int64_t d1);  // materialised contiguous
Variable slice(const Variable& x, int64_t dim, int64_t start, int64_t end);
Variable concat(const std::vector<Variable>& xs, int64_t dim);

}  // namespace sw::ops
