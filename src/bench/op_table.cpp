#include "bench/op_table.h"

#include <cmath>
#include <random>

#include "core/timer.h"
#include "kernels/ref/basic_ref.h"
#include "kernels/ref/gated_linear_attention_ref.h"
#include "ops/lightning_ops.h"
#include "ops/ops.h"
#include "ops/rows_ops.h"

namespace sw::bench {
namespace {

using kernels::Unary;
using Vec = std::vector<double>;
using Vecs = std::vector<Vec>;
using Vars = std::vector<Variable>;

Tensor rand_tensor(const Shape& s, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<float> v(shape_numel(s));
  for (float& x : v) x = static_cast<float>(d(rng));
  return Tensor::from_vector(v, s);
}

Tensor rand_ids(int64_t n, int64_t vocab, uint64_t seed, bool some_ignored = false) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<int32_t>(rng() % vocab);
  if (some_ignored)
    for (int64_t i = 0; i < n; i += 5) v[i] = -1;
  return Tensor::from_vector(v, {n});
}

std::vector<int32_t> ints(const Vec& v) { return std::vector<int32_t>(v.begin(), v.end()); }

double rounded_bf16(double x) { return bf16_to_f32(f32_to_bf16(static_cast<float>(x))); }

}  // namespace

std::vector<OpCase> op_cases(int size) {
  std::vector<OpCase> cases;
  const bool big = size > 0;
  const int64_t rows = big ? 4096 : 12, dim = big ? 768 : 40;
  const int64_t n_elem = rows * dim;
  auto sz = [&](const char* op) { return std::string(op) + "[" + std::to_string(rows) + "x" + std::to_string(dim) + "]"; };

  // Elementwise activations. fp32 vs f64: one rounding of the result plus libm's ~1 ulp: 1e-6 relative.
  for (Unary u : {Unary::silu, Unary::gelu, Unary::sigmoid, Unary::softplus, Unary::exp, Unary::log, Unary::square}) {
    OpCase c;
    c.name = sz(kernels::unary_name(u));
    bool positive = u == Unary::log;
    c.inputs = {rand_tensor({rows, dim}, 11, positive ? 0.2 : -3, positive ? 3 : 3)};
    c.op = [u](const Vars& v) { return ops::unary(u, v[0]); };
    c.ref = [u](const Vecs& v) { return kernels::ref::unary(u, v[0]); };
    c.atol = 1e-6, c.rtol = 2e-6;
    c.flops = 10.0 * n_elem, c.bytes = 8.0 * n_elem;
    cases.push_back(c);
  }
  {
    OpCase c;
    c.name = sz("swiglu");
    c.inputs = {rand_tensor({rows, dim}, 12, -3, 3), rand_tensor({rows, dim}, 13)};
    c.op = [](const Vars& v) { return ops::swiglu(v[0], v[1]); };
    c.ref = [](const Vecs& v) { return kernels::ref::swiglu(v[0], v[1]); };
    c.atol = 1e-6, c.rtol = 2e-6;
    c.flops = 12.0 * n_elem, c.bytes = 12.0 * n_elem;
    cases.push_back(c);
  }
  // Binary ops with broadcasting of a trailing [dim] row (bias, per-channel scale).
  for (int which = 0; which < 3; ++which) {
    OpCase c;
    const char* nm[] = {"add", "sub", "mul"};
    c.name = sz(nm[which]) + "+bcast";
    c.inputs = {rand_tensor({rows, dim}, 14), rand_tensor({dim}, 15)};
    c.op = [which](const Vars& v) {
      return which == 0 ? ops::add(v[0], v[1]) : which == 1 ? ops::sub(v[0], v[1]) : ops::mul(v[0], v[1]);
    };
    c.ref = [which, rows, dim](const Vecs& v) {
      Vec y(rows * dim);
      for (int64_t i = 0; i < rows * dim; ++i) {
        double a = v[0][i], b = v[1][i % dim];
        y[i] = which == 0 ? a + b : which == 1 ? a - b : a * b;
      }
      return y;
    };
    c.atol = 1e-6, c.rtol = 1e-6;  // one fp32 rounding
    // The broadcast operand's gradient sums `rows` terms of size ~1 in fp32.
    c.grad.atol = 1e-5 * std::sqrt(static_cast<double>(rows));
    c.flops = 1.0 * n_elem, c.bytes = 8.0 * n_elem;
    cases.push_back(c);
  }
  {
    OpCase c;
    c.name = sz("scale");
    c.inputs = {rand_tensor({rows, dim}, 16)};
    c.op = [](const Vars& v) { return ops::scale(v[0], 0.37); };
    c.ref = [](const Vecs& v) {
      Vec y = v[0];
      for (double& x : y) x *= static_cast<double>(0.37f);
      return y;
    };
    c.atol = 1e-6, c.rtol = 1e-6;
    c.flops = 1.0 * n_elem, c.bytes = 8.0 * n_elem;
    cases.push_back(c);
  }
  // Linear: y = x W^T + b. K = dim: fp32 accumulation error ~ sqrt(K) * 6e-8 * |terms|; 1e-5 covers K<=768.
  const int64_t out_f = big ? 2048 : 24;
  for (int mode = 0; mode < 3; ++mode) {  // 0: f32, 1: bf16 weight, 2: f32 weight with bf16 compute
    OpCase c;
    const char* nm[] = {"linear_f32", "linear_bf16w", "linear_bf16compute"};
    c.name = std::string(nm[mode]) + "[" + std::to_string(rows) + "x" + std::to_string(dim) + "->" +
             std::to_string(out_f) + "]";
    Tensor w = rand_tensor({out_f, dim}, 17, -0.2, 0.2);
    c.inputs = {rand_tensor({rows, dim}, 18), mode == 1 ? w.to(DType::bf16) : w, rand_tensor({out_f}, 19)};
    c.op = [mode](const Vars& v) { return ops::linear(v[0], v[1], &v[2], mode == 2 ? DType::bf16 : DType::f32); };
    c.ref = [mode, rows, dim, out_f](const Vecs& v) {
      Vec x = v[0], w = v[1];
      if (mode > 0) {  // the bf16 GEMM's semantics: both operands rounded to bf16, exact products, fp32 sums
        for (double& e : x) e = rounded_bf16(e);
        for (double& e : w) e = rounded_bf16(e);
      }
      Vec y = kernels::ref::matmul(x, w, rows, out_f, dim, true);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < out_f; ++j) y[i * out_f + j] += v[2][j];
      return y;
    };
    c.atol = 2e-5, c.rtol = 1e-5;
    // bf16 paths round the gradient operands too, which the f64 reference does not: their gradient is
    // checked by training (mixed-precision loss curves), not here.
    c.has_grad = mode == 0;
    c.grad.atol = 5e-4;
    c.flops = 2.0 * rows * out_f * dim;
    c.bytes = 4.0 * (rows * dim + rows * out_f) + (mode == 1 ? 2.0 : 4.0) * out_f * dim;
    cases.push_back(c);
  }
  {
    OpCase c;  // batched matmul, B transposed (attention-score shaped)
    int64_t b = big ? 12 : 3, m = big ? 512 : 7, k = big ? 64 : 16, n = big ? 512 : 9;
    c.name = "matmul_bt[" + std::to_string(b) + "x" + std::to_string(m) + "x" + std::to_string(k) + "x" +
             std::to_string(n) + "]";
    c.inputs = {rand_tensor({b, m, k}, 20), rand_tensor({b, n, k}, 21)};
    c.op = [](const Vars& v) { return ops::matmul(v[0], v[1], true); };
    c.ref = [b, m, n, k](const Vecs& v) {
      Vec y;
      for (int64_t i = 0; i < b; ++i) {
        Vec a(v[0].begin() + i * m * k, v[0].begin() + (i + 1) * m * k);
        Vec bb(v[1].begin() + i * n * k, v[1].begin() + (i + 1) * n * k);
        Vec r = kernels::ref::matmul(a, bb, m, n, k, true);
        y.insert(y.end(), r.begin(), r.end());
      }
      return y;
    };
    c.atol = 1e-5, c.rtol = 1e-5;
    c.flops = 2.0 * b * m * n * k, c.bytes = 4.0 * b * (m * k + n * k + m * n);
    cases.push_back(c);
  }
  // Norms: reductions over dim in fp32: 1e-5 relative.
  {
    OpCase c;
    c.name = sz("rmsnorm");
    c.inputs = {rand_tensor({rows, dim}, 22), rand_tensor({dim}, 23, 0.5, 1.5)};
    c.op = [](const Vars& v) { return ops::rmsnorm(v[0], &v[1], 1e-6); };
    c.ref = [rows, dim](const Vecs& v) { return kernels::ref::rmsnorm(v[0], &v[1], rows, dim, 1e-6); };
    c.atol = 1e-5, c.rtol = 1e-5;
    c.grad.atol = 2e-4;  // dw sums rows terms
    c.flops = 4.0 * n_elem, c.bytes = 8.0 * n_elem;
    cases.push_back(c);
  }
  {
    OpCase c;
    c.name = sz("layernorm");
    c.inputs = {rand_tensor({rows, dim}, 24, -1, 2), rand_tensor({dim}, 25, 0.5, 1.5), rand_tensor({dim}, 26)};
    c.op = [](const Vars& v) { return ops::layernorm(v[0], &v[1], &v[2], 1e-5); };
    c.ref = [rows, dim](const Vecs& v) { return kernels::ref::layernorm(v[0], &v[1], &v[2], rows, dim, 1e-5); };
    c.atol = 1e-5, c.rtol = 1e-5;
    c.grad.atol = 2e-4;
    c.flops = 7.0 * n_elem, c.bytes = 8.0 * n_elem;
    cases.push_back(c);
  }
  {
    OpCase c;
    c.name = sz("l2norm");
    c.inputs = {rand_tensor({rows, dim}, 27)};
    c.op = [](const Vars& v) { return ops::l2norm(v[0], 1e-6); };
    c.ref = [rows, dim](const Vecs& v) { return kernels::ref::l2norm(v[0], rows, dim, 1e-6); };
    c.atol = 1e-6, c.rtol = 1e-5;
    c.flops = 3.0 * n_elem, c.bytes = 8.0 * n_elem;
    cases.push_back(c);
  }
  for (int logv = 0; logv < 2; ++logv) {
    OpCase c;
    c.name = sz(logv ? "log_softmax" : "softmax");
    c.inputs = {rand_tensor({rows, dim}, 28, -4, 4)};
    c.op = [logv](const Vars& v) { return logv ? ops::log_softmax(v[0]) : ops::softmax(v[0]); };
    c.ref = [logv, rows, dim](const Vecs& v) {
      return logv ? kernels::ref::log_softmax(v[0], rows, dim) : kernels::ref::softmax(v[0], rows, dim);
    };
    c.atol = 1e-6, c.rtol = 1e-5;
    c.flops = 5.0 * n_elem, c.bytes = 8.0 * n_elem;
    cases.push_back(c);
  }
  // RoPE: angles up to pos ~ 300 rad; fp32 sin/cos of a double angle: 1e-6.
  for (int partial = 0; partial < 2; ++partial) {
    OpCase c;
    int64_t B = big ? 1 : 2, T = big ? 2048 : 9, H = big ? 12 : 3, D = big ? 64 : 16;
    int64_t R = partial ? D / 2 : D;
    c.name = std::string(partial ? "rope_partial" : "rope") + "[" + std::to_string(B) + "x" + std::to_string(T) + "x" +
             std::to_string(H) + "x" + std::to_string(D) + "]";
    std::vector<int32_t> pos(T);
    for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t * 37 + 5);
    c.inputs = {rand_tensor({B, T, H, D}, 29), Tensor::from_vector(pos, {T})};
    double base = partial ? 10000.0 : 500000.0;
    c.op = [R, base](const Vars& v) { return ops::rope(v[0], v[1].data(), R, base); };
    c.ref = [=](const Vecs& v) { return kernels::ref::rope(v[0], ints(v[1]), B, T, H, D, R, base); };
    c.atol = 5e-6, c.rtol = 1e-5;
    c.flops = 6.0 * B * T * H * D, c.bytes = 8.0 * B * T * H * D;
    cases.push_back(c);
  }
  // Causal depthwise conv1d with an initial state (the decode carry).
  {
    OpCase c;
    int64_t B = big ? 1 : 2, T = big ? 2048 : 11, C = big ? 1536 : 20, W = 4;
    c.name = "causal_conv1d[" + std::to_string(B) + "x" + std::to_string(T) + "x" + std::to_string(C) + ",w4]";
    c.inputs = {rand_tensor({B, T, C}, 30), rand_tensor({C, W}, 31), rand_tensor({C}, 32), rand_tensor({B, W - 1, C}, 33)};
    c.op = [](const Vars& v) { return ops::causal_conv1d(v[0], v[1], &v[2], &v[3]); };
    c.ref = [=](const Vecs& v) {
      Vec y = kernels::ref::causal_conv1d(v[0], v[1], &v[2], &v[3], B, T, C, W);
      y.resize(B * T * C);  // the op's differentiable output is y; the final state is checked in its test
      return y;
    };
    c.atol = 1e-6, c.rtol = 1e-5;
    c.grad.atol = 2e-4;
    c.flops = 2.0 * B * T * C * W, c.bytes = 8.0 * B * T * C;
    cases.push_back(c);
  }
  {
    OpCase c;
    int64_t V = big ? 32000 : 50, N = big ? 4096 : 13;
    c.name = "embedding[" + std::to_string(V) + "x" + std::to_string(dim) + ",n" + std::to_string(N) + "]";
    c.inputs = {rand_tensor({V, dim}, 34), rand_ids(N, V, 35)};
    c.op = [](const Vars& v) { return ops::embedding(v[0], v[1].data()); };
    c.ref = [dim](const Vecs& v) { return kernels::ref::embedding(v[0], ints(v[1]), dim); };
    c.atol = 0, c.rtol = 0;  // a copy is exact
    c.flops = 0, c.bytes = 8.0 * N * dim;
    cases.push_back(c);
  }
  // Cross-entropy fused with the LM head, chunked over a vocabulary that is not a multiple of the chunk.
  for (int bf : {0, 1}) {
    OpCase c;
    int64_t V = big ? 32000 : 37, N = big ? 2048 : 11, D = big ? 768 : 24;
    c.name = std::string(bf ? "cross_entropy_bf16" : "cross_entropy") + "[" + std::to_string(N) + "x" +
             std::to_string(D) + ",V" + std::to_string(V) + "]";
    c.inputs = {rand_tensor({N, D}, 36), rand_tensor({V, D}, 37, -0.5, 0.5), rand_ids(N, V, 38, true)};
    ops::CrossEntropyOptions o;
    if (!big) o.row_block = 4, o.vocab_chunk = 16;  // several row blocks and vocabulary chunks, with tails
    o.compute = bf ? DType::bf16 : DType::f32;
    c.op = [o](const Vars& v) { return ops::fused_cross_entropy(v[0], v[1], v[2].data(), o); };
    c.ref = [=](const Vecs& v) {
      Vec h = v[0], w = v[1];
      if (bf) {
        for (double& e : h) e = rounded_bf16(e);
        for (double& e : w) e = rounded_bf16(e);
      }
      return Vec{kernels::ref::cross_entropy(h, w, ints(v[2]), N, D, V)};
    };
    c.atol = 1e-5, c.rtol = 1e-5;
    c.has_grad = !bf;  // bf16 rounds the backward's operands too (see linear)
    c.flops = 2.0 * N * V * D, c.bytes = 4.0 * (N * D + V * D);
    cases.push_back(c);
  }
  {
    OpCase c;
    c.name = sz("sum_rows");
    c.inputs = {rand_tensor({rows, dim}, 39)};
    c.op = [](const Vars& v) { return ops::sum(v[0], 1); };
    c.ref = [rows, dim](const Vecs& v) { return kernels::ref::sum_axis(v[0], rows, dim, 1); };
    c.atol = 1e-5, c.rtol = 1e-5;
    c.flops = 1.0 * n_elem, c.bytes = 4.0 * n_elem;
    cases.push_back(c);
  }
  // Row gather / scatter (Mixture-of-Depths moves a block's chosen tokens): exact copies.
  {
    const int64_t picked = rows / 4;
    std::vector<int32_t> idx(picked);
    for (int64_t i = 0; i < picked; ++i) idx[i] = static_cast<int32_t>(rows - 1 - 4 * i);  // distinct, descending
    const Tensor ti = Tensor::from_vector(idx, {picked});
    OpCase g;
    g.name = "gather_rows[" + std::to_string(rows) + "x" + std::to_string(dim) + "->" + std::to_string(picked) + "]";
    g.inputs = {rand_tensor({rows, dim}, 47)};
    g.op = [ti](const Vars& v) { return ops::gather_rows(v[0], ti); };
    g.ref = [idx, dim](const Vecs& v) {
      Vec y;
      for (int32_t r : idx) y.insert(y.end(), v[0].begin() + r * dim, v[0].begin() + (r + 1) * dim);
      return y;
    };
    g.atol = 0, g.rtol = 0;
    g.flops = 0, g.bytes = 8.0 * picked * dim;
    cases.push_back(g);
    OpCase s;
    s.name = "scatter_rows[" + std::to_string(picked) + "->" + std::to_string(rows) + "x" + std::to_string(dim) + "]";
    s.inputs = {rand_tensor({picked, dim}, 48)};
    s.op = [ti, rows](const Vars& v) { return ops::scatter_rows(v[0], ti, rows); };
    s.ref = [idx, rows, dim](const Vecs& v) {
      Vec y(static_cast<size_t>(rows * dim), 0.0);
      for (size_t m = 0; m < idx.size(); ++m)
        for (int64_t d = 0; d < dim; ++d) y[idx[m] * dim + d] = v[0][m * dim + d];
      return y;
    };
    s.atol = 0, s.rtol = 0;
    s.flops = 0, s.bytes = 4.0 * (picked * dim + rows * dim);
    cases.push_back(s);
  }
  {
    OpCase c;
    c.name = sz("mean_all");
    c.inputs = {rand_tensor({rows, dim}, 40)};
    c.op = [](const Vars& v) { return ops::mean(v[0]); };
    c.ref = [](const Vecs& v) {
      double s = 0;
      for (double x : v[0]) s += x;
      return Vec{s / static_cast<double>(v[0].size())};
    };
    c.atol = 1e-6, c.rtol = 1e-5;
    c.flops = 1.0 * n_elem, c.bytes = 4.0 * n_elem;
    cases.push_back(c);
  }
  {
    OpCase c;  // cumulative sum along time of [B, T, H] log-gates
    int64_t B = big ? 4 : 2, T = big ? 4096 : 17, H = big ? 12 : 3;
    c.name = "cumsum[" + std::to_string(B) + "x" + std::to_string(T) + "x" + std::to_string(H) + ",dim1]";
    c.inputs = {rand_tensor({B, T, H}, 41, -1, 0)};
    c.op = [](const Vars& v) { return ops::cumsum(v[0], 1); };
    c.ref = [=](const Vecs& v) { return kernels::ref::cumsum(v[0], B, T, H); };
    c.atol = 1e-5, c.rtol = 1e-6;  // double accumulation, one rounding per output
    c.flops = 1.0 * B * T * H, c.bytes = 8.0 * B * T * H;
    cases.push_back(c);
  }
  // Lightning attention (Lightning-2 blocks, per-head constant decay) with an initial state; output
  // o and the final state, flattened. Reference: the GLA family's f64 recurrence in head-constant
  // mode. Each value sums <= K T ~ 80 fp32 products of O(1) terms with decays <= 1: ~6e-8 sqrt(80)
  // relative, 1e-5 leaves a wide margin. The small case uses 8-token blocks over T = 19.
  {
    OpCase c;
    const int64_t B = big ? 1 : 2, T = big ? 2048 : 19, H = big ? 8 : 3, K = big ? 64 : 4, V = big ? 64 : 5;
    const int64_t blk = big ? 64 : 8;
    c.name = "lightning_attention[" + std::to_string(B) + "x" + std::to_string(T) + "x" + std::to_string(H) + "x" +
             std::to_string(K) + "x" + std::to_string(V) + ",blk" + std::to_string(blk) + "]";
    c.inputs = {rand_tensor({B, T, H, K}, 42), rand_tensor({B, T, H, K}, 43), rand_tensor({B, T, H, V}, 44),
                rand_tensor({H}, 45, -0.8, -0.02), rand_tensor({B, H, K, V}, 46)};
    c.op = [blk](const Vars& v) {
      ops::LightningOutput r = ops::lightning_attention(v[0], v[1], v[2], v[3], &v[4], 1.0, blk);
      return ops::concat({ops::reshape(r.o, {r.o.numel()}), ops::reshape(r.state, {r.state.numel()})}, 0);
    };
    c.ref = [=](const Vecs& v) {
      Vec out(B * T * H * V + B * H * K * V);
      kernels::ref::gla_forward_ref({B, T, H, K, V}, kernels::GlaGate::kHeadConst, 1.0, v[0].data(), v[1].data(),
                                    v[2].data(), v[3].data(), nullptr, v[4].data(), out.data(),
                                    out.data() + B * T * H * V);
      return out;
    };
    c.atol = 1e-5, c.rtol = 1e-5;
    // Per token and head as the block kernel computes it: causal half of the block's scores and
    // their product with v, C (K + V); inter read-out and state update, 4 K V.
    c.flops = static_cast<double>(B * T * H) * (static_cast<double>(blk) * (K + V) + 4.0 * K * V);
    c.bytes = 4.0 * (B * T * H * (2 * K + 2 * V) + 2 * B * H * K * V);
    cases.push_back(c);
  }
  return cases;
}

CheckResult run_check(const OpCase& c) {
  std::vector<Variable> vars;
  std::vector<Vec> refs;
  for (const Tensor& t : c.inputs) {
    vars.emplace_back(t);
    refs.push_back(t.to_doubles());
  }
  NoGradGuard no_grad;
  std::vector<double> got = c.op(vars).data().to_doubles();
  std::vector<double> want = c.ref(refs);
  CheckResult r{true, 0, ""};
  if (got.size() != want.size()) return {false, INFINITY, "size " + std::to_string(got.size()) + " vs reference " +
                                                              std::to_string(want.size())};
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(got[i] - want[i]);
    if (!(err <= c.atol + c.rtol * std::fabs(want[i]))) {
      if (r.ok) r.report = "element " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs reference " +
                           std::to_string(want[i]);
      r.ok = false;
    }
    if (!(err <= r.max_abs_err)) r.max_abs_err = err;
  }
  return r;
}

GradCheckResult run_grad(const OpCase& c) { return grad_check(c.op, c.ref, c.inputs, c.grad); }

PerfResult run_perf(const OpCase& c, double min_seconds) {
  PerfResult r;
  std::vector<Variable> plain, train;
  for (const Tensor& t : c.inputs) {
    plain.emplace_back(t);
    train.emplace_back(t, c.has_grad && t.dtype() == DType::f32);
  }
  r.seconds_fwd = time_median(
      [&] {
        NoGradGuard g;
        c.op(plain);
      },
      min_seconds);
  if (c.has_grad)
    r.seconds_fwd_bwd = time_median(
        [&] {
          Variable y = c.op(train);
          y.backward(Tensor::full(y.shape(), 1.0));
          for (Variable& v : train) v.zero_grad();
        },
        min_seconds);
  r.gflops = c.flops / r.seconds_fwd * 1e-9;
  r.gbs = c.bytes / r.seconds_fwd * 1e-9;
  return r;
}

}  // namespace sw::bench
