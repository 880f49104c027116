#include "kernels/gemm/gemm.h"
#include "ops/ops.h"

namespace sw::ops {
namespace {

// A row-major [rows, cols] f32 or bf16 matrix as GEMM operand.
kernels::GemmArgs gemm_args(int64_t m, int64_t n, int64_t k) {
  kernels::GemmArgs g;
  g.m = m, g.n = n, g.k = k;
  return g;
}

Tensor as_bf16(const Tensor& t) { return t.dtype() == DType::bf16 ? t : t.to(DType::bf16); }

}  // namespace

Variable linear(const Variable& x, const Variable& w, const Variable* bias, DType compute) {
  Tensor tx = x.data().contiguous(), tw = w.data().contiguous();
  SW_CHECK(tw.ndim() == 2, "linear", "weight must be [out, in], got ", tw.describe());
  SW_CHECK(tx.ndim() >= 1 && tx.dim(-1) == tw.dim(1), "linear", "input ", tx.describe(), " does not match weight ",
           tw.describe(), " (last dim must equal in = ", tw.dim(1), ")");
  SW_CHECK(tx.dtype() == DType::f32, "linear", "input must be f32, got ", tx.describe());
  SW_CHECK(compute == DType::f32 || compute == DType::bf16, "linear", "compute type must be f32 or bf16");
  int64_t out_f = tw.dim(0), in_f = tw.dim(1), rows = tx.numel() / in_f;
  Tensor tb;
  if (bias) {
    tb = bias->data().contiguous();
    SW_CHECK(tb.shape() == Shape{out_f} && tb.dtype() == DType::f32, "linear", "bias must be f32[", out_f, "], got ",
             tb.describe());
  }
  bool low = compute == DType::bf16 || tw.dtype() == DType::bf16;
  Tensor wk = low ? as_bf16(tw) : tw;  // weight as the GEMM sees it
  Shape ys = tx.shape();
  ys.back() = out_f;
  Tensor y = Tensor::empty(ys);
  if (tb.defined()) {  // seed C with the bias and accumulate (beta = 1): saves a pass over y
    float* py = y.data<float>();
    const float* pb = tb.data<float>();
#pragma omp parallel for schedule(static) if (rows * out_f > (1 << 15))
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < out_f; ++j) py[r * out_f + j] = pb[j];
  }
  kernels::GemmArgs g = gemm_args(rows, out_f, in_f);
  g.a = tx.data<float>(), g.lda = in_f;
  g.b = wk.raw_data(), g.b_type = wk.dtype(), g.trans_b = true, g.ldb = in_f;
  g.c = y.data<float>(), g.ldc = out_f, g.beta = tb.defined() ? 1.f : 0.f;
  kernels::gemm(g);
  std::vector<Variable> inputs = {x, w};
  if (bias) inputs.push_back(*bias);
  bool need_x = x.requires_grad(), need_w = w.requires_grad(), has_bias = bias != nullptr;
  SW_CHECK(!(need_w && tw.dtype() == DType::bf16), "linear", "a bf16 weight cannot be trained: keep an f32 master weight "
                                                             "and pass compute = bf16");
  return record1("linear", inputs, y, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
    const Tensor& gy = grads[0];
    Tensor gx, gw, gb;
    if (need_x) {  // dx [rows, in] = dy [rows, out] @ W [out, in]
      gx = Tensor::empty(tx.shape());
      kernels::GemmArgs a = gemm_args(rows, in_f, out_f);
      a.a = gy.data<float>(), a.lda = out_f;
      a.b = wk.raw_data(), a.b_type = wk.dtype(), a.ldb = in_f;
      a.c = gx.data<float>(), a.ldc = in_f;
      kernels::gemm(a);
    }
    if (need_w) {  // dW [out, in] = dy^T [out, rows] @ x [rows, in]
      gw = Tensor::empty({out_f, in_f});
      Tensor gyk = low ? as_bf16(gy) : gy, txk = low ? as_bf16(tx) : tx;
      kernels::GemmArgs a = gemm_args(out_f, in_f, rows);
      a.a = gyk.raw_data(), a.a_type = gyk.dtype(), a.trans_a = true, a.lda = out_f;
      a.b = txk.raw_data(), a.b_type = txk.dtype(), a.ldb = in_f;
      a.c = gw.data<float>(), a.ldc = in_f;
      kernels::gemm(a);
    }
    if (has_bias) {
      gb = Tensor::zeros({out_f});
      float* p = gb.data<float>();
      const float* pg = gy.data<float>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < out_f; ++j) p[j] += pg[r * out_f + j];
      return {gx, gw, gb};
    }
    return {gx, gw};
  });
}

Variable matmul(const Variable& a, const Variable& b, bool trans_b) {
  Tensor ta = a.data().contiguous(), tb = b.data().contiguous();
  SW_CHECK(ta.ndim() >= 2 && tb.ndim() >= 2, "matmul", "needs at least 2-d inputs, got ", ta.describe(), " and ",
           tb.describe());
  SW_CHECK(ta.dtype() == DType::f32 && tb.dtype() == DType::f32, "matmul", "needs f32 inputs");
  int64_t m = ta.dim(-2), k = ta.dim(-1);
  int64_t n = trans_b ? tb.dim(-2) : tb.dim(-1);
  int64_t kb = trans_b ? tb.dim(-1) : tb.dim(-2);
  SW_CHECK(k == kb, "matmul", "inner dims differ: ", ta.describe(), " @ ", tb.describe(), trans_b ? "^T" : "");
  int64_t batch = ta.numel() / (m * k);
  int64_t b_batch = tb.numel() / (kb * n);
  SW_CHECK(b_batch == batch || b_batch == 1, "matmul", "batch dims differ: ", ta.describe(), " and ", tb.describe());
  Shape ys = ta.shape();
  ys.back() = n;
  Tensor y = Tensor::empty(ys);
  auto run = [](const Tensor& x, bool tx, const Tensor& w, bool tw, Tensor& out, int64_t m, int64_t n, int64_t k,
                int64_t batch, int64_t sx, int64_t sw, float beta) {
    kernels::GemmArgs g;
    g.m = m, g.n = n, g.k = k, g.batch = batch, g.beta = beta;
    g.a = x.data<float>(), g.trans_a = tx, g.lda = tx ? m : k, g.stride_a = sx;
    g.b = w.data<float>(), g.trans_b = tw, g.ldb = tw ? k : n, g.stride_b = sw;
    g.c = out.data<float>(), g.ldc = n, g.stride_c = m * n;
    kernels::gemm(g);
  };
  int64_t sb = b_batch == 1 ? 0 : kb * n;
  run(ta, false, tb, trans_b, y, m, n, k, batch, m * k, sb, 0.f);
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  return record1("matmul", {a, b}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor ga, gb;
    if (need_a) {  // dA [m, k] = dY [m, n] @ op(B)^T
      ga = Tensor::empty(ta.shape());
      run(g[0], false, tb, !trans_b, ga, m, k, n, batch, m * n, sb, 0.f);
    }
    if (need_b) {
      gb = Tensor::zeros(tb.shape());
      // dB [k, n] = A^T @ dY, or for trans_b dB [n, k] = dY^T @ A; summed over the batch when B is shared.
      for (int64_t i = 0; i < batch; ++i) {
        kernels::GemmArgs q;
        q.beta = (b_batch == 1 && i > 0) ? 1.f : 0.f;
        const float* pa = ta.data<float>() + i * m * k;
        const float* pg = g[0].data<float>() + i * m * n;
        float* pb = gb.data<float>() + (b_batch == 1 ? 0 : i * kb * n);
        if (!trans_b) {
          q.m = k, q.n = n, q.k = m, q.a = pa, q.trans_a = true, q.lda = k, q.b = pg, q.ldb = n, q.c = pb, q.ldc = n;
        } else {
          q.m = n, q.n = k, q.k = m, q.a = pg, q.trans_a = true, q.lda = n, q.b = pa, q.ldb = k, q.c = pb, q.ldc = k;
        }
        kernels::gemm(q);
      }
    }
    return {ga, gb};
  });
}

}  // namespace sw::ops
