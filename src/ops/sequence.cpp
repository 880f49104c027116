// Ops over positions and time: RoPE and the causal depthwise convolution.
#include "kernels/conv/causal_conv1d.h"
#include "kernels/rope/rope.h"
#include "ops/ops.h"

namespace sw::ops {

Variable rope(const Variable& x, const Tensor& positions, int64_t rotary_dim, double base) {
  Tensor tx = x.data().contiguous();
  SW_CHECK(tx.ndim() == 4 && tx.dtype() == DType::f32, "rope", "input must be f32 [B, T, H, D], got ", tx.describe());
  int64_t B = tx.dim(0), T = tx.dim(1), H = tx.dim(2), D = tx.dim(3);
  SW_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= D && rotary_dim <= 1024, "rope", "rotary_dim ",
           rotary_dim, " must be even, positive and at most head_dim ", D, " (and 1024)");
  SW_CHECK(base > 1.0, "rope", "base must be > 1, got ", base);
  Tensor pos = positions.contiguous();
  SW_CHECK(pos.dtype() == DType::i32 && pos.shape() == Shape{T}, "rope", "positions must be i32[", T, "], got ",
           pos.describe());
  Tensor y = Tensor::empty(tx.shape());
  kernels::rope_fwd(tx.data<float>(), y.data<float>(), pos.data<int32_t>(), B, T, H, D, rotary_dim,
                    static_cast<float>(base));
  return record1("rope", {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(tx.shape());
    kernels::rope_bwd(g[0].data<float>(), dx.data<float>(), pos.data<int32_t>(), B, T, H, D, rotary_dim,
                      static_cast<float>(base));
    return {dx};
  });
}

Variable causal_conv1d(const Variable& x, const Variable& w, const Variable* bias, const Variable* state0,
                       Tensor* state_out) {
  Tensor tx = x.data().contiguous(), tw = w.data().contiguous();
  SW_CHECK(tx.ndim() == 3 && tx.dtype() == DType::f32, "causal_conv1d", "input must be f32 [B, T, C], got ",
           tx.describe());
  int64_t B = tx.dim(0), T = tx.dim(1), C = tx.dim(2);
  // A bf16 weight (a model converted for inference) is widened: C x W values, negligible next to x.
  SW_CHECK(!(tw.dtype() == DType::bf16 && w.requires_grad()), "causal_conv1d", "a bf16 weight cannot be trained");
  if (tw.dtype() == DType::bf16) tw = tw.to(DType::f32);
  SW_CHECK(tw.ndim() == 2 && tw.dim(0) == C && tw.dim(1) >= 1 && tw.dtype() == DType::f32, "causal_conv1d",
           "weight must be f32 or bf16 [", C, ", W], got ", tw.describe());
  int64_t W = tw.dim(1);
  Tensor tb, ts;
  if (bias) {
    tb = bias->data().contiguous();
    SW_CHECK(tb.shape() == Shape{C}, "causal_conv1d", "bias must be [", C, "], got ", tb.describe());
  }
  if (state0) {
    ts = state0->data().contiguous();
    SW_CHECK((ts.shape() == Shape{B, W - 1, C}), "causal_conv1d", "state must be [", B, ", ", W - 1, ", ", C, "], got ",
             ts.describe());
  }
  Tensor y = Tensor::empty(tx.shape());
  Tensor st;
  if (state_out) st = Tensor::empty({B, W - 1, C});
  kernels::causal_conv1d_fwd(tx.data<float>(), tw.data<float>(), tb.defined() ? tb.data<float>() : nullptr,
                             ts.defined() ? ts.data<float>() : nullptr, y.data<float>(),
                             state_out ? st.data<float>() : nullptr, B, T, C, W);
  if (state_out) *state_out = st;
  std::vector<Variable> in = {x, w, bias ? *bias : Variable(), state0 ? *state0 : Variable()};
  bool need_s = state0 && state0->requires_grad();
  return record1("causal_conv1d", in, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(tx.shape()), dw = Tensor::empty(tw.shape());
    Tensor db = tb.defined() ? Tensor::empty({C}) : Tensor();
    Tensor ds = need_s ? Tensor::empty({B, W - 1, C}) : Tensor();
    kernels::causal_conv1d_bwd(tx.data<float>(), tw.data<float>(), ts.defined() ? ts.data<float>() : nullptr,
                               g[0].data<float>(), nullptr, dx.data<float>(), dw.data<float>(),
                               db.defined() ? db.data<float>() : nullptr, need_s ? ds.data<float>() : nullptr, B, T, C,
                               W);
    return {dx, dw, db, ds};
  });
}

}  // namespace sw::ops
