#include "kernels/norm/norms.h"
#include "kernels/softmax/softmax.h"
#include "ops/ops.h"

namespace sw::ops {
namespace {

Tensor f32_contiguous(const Variable& v, const char* op, const char* what) {
  Tensor t = v.data().contiguous();
  SW_CHECK(t.dtype() == DType::f32, op, what, " must be f32, got ", t.describe());
  return t;
}

Tensor check_row_param(const Variable* p, int64_t dim, const char* op, const char* what) {
  if (!p) return Tensor();
  Tensor t = f32_contiguous(*p, op, what);
  SW_CHECK(t.shape() == Shape{dim}, op, what, " must be [", dim, "] to match the input's last dim, got ", t.describe());
  return t;
}

}  // namespace

Variable rmsnorm(const Variable& x, const Variable* w, double eps) {
  Tensor tx = f32_contiguous(x, "rmsnorm", "input");
  int64_t dim = tx.dim(-1), rows = tx.numel() / dim;
  Tensor tw = check_row_param(w, dim, "rmsnorm", "weight");
  Tensor y = Tensor::empty(tx.shape()), rstd = Tensor::empty({rows});
  const float* pw = tw.defined() ? tw.data<float>() : nullptr;
  kernels::rmsnorm_fwd(tx.data<float>(), pw, y.data<float>(), rstd.data<float>(), rows, dim, static_cast<float>(eps));
  std::vector<Variable> in = {x};
  if (w) in.push_back(*w);
  bool need_w = w && w->requires_grad();
  return record1("rmsnorm", in, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(tx.shape()), dw = need_w ? Tensor::empty({dim}) : Tensor();
    kernels::rmsnorm_bwd(tx.data<float>(), tw.defined() ? tw.data<float>() : nullptr, rstd.data<float>(),
                         g[0].data<float>(), dx.data<float>(), need_w ? dw.data<float>() : nullptr, rows, dim);
    if (tw.defined()) return {dx, dw};
    return {dx};
  });
}

Variable layernorm(const Variable& x, const Variable* w, const Variable* b, double eps) {
  Tensor tx = f32_contiguous(x, "layernorm", "input");
  int64_t dim = tx.dim(-1), rows = tx.numel() / dim;
  Tensor tw = check_row_param(w, dim, "layernorm", "weight");
  Tensor tb = check_row_param(b, dim, "layernorm", "bias");
  Tensor y = Tensor::empty(tx.shape()), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
  kernels::layernorm_fwd(tx.data<float>(), tw.defined() ? tw.data<float>() : nullptr,
                         tb.defined() ? tb.data<float>() : nullptr, y.data<float>(), mean.data<float>(),
                         rstd.data<float>(), rows, dim, static_cast<float>(eps));
  std::vector<Variable> in = {x, w ? *w : Variable(), b ? *b : Variable()};
  bool need_w = w && w->requires_grad(), need_b = b && b->requires_grad();
  return record1("layernorm", in, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(tx.shape());
    Tensor dw = need_w ? Tensor::empty({dim}) : Tensor(), db = need_b ? Tensor::empty({dim}) : Tensor();
    kernels::layernorm_bwd(tx.data<float>(), tw.defined() ? tw.data<float>() : nullptr, mean.data<float>(),
                           rstd.data<float>(), g[0].data<float>(), dx.data<float>(),
                           need_w ? dw.data<float>() : nullptr, need_b ? db.data<float>() : nullptr, rows, dim);
    return {dx, dw, db};
  });
}

Variable l2norm(const Variable& x, double eps) {
  Tensor tx = f32_contiguous(x, "l2norm", "input");
  int64_t dim = tx.dim(-1), rows = tx.numel() / dim;
  Tensor y = Tensor::empty(tx.shape()), rn = Tensor::empty({rows});
  kernels::l2norm_fwd(tx.data<float>(), y.data<float>(), rn.data<float>(), rows, dim, static_cast<float>(eps));
  return record1("l2norm", {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(tx.shape());
    kernels::l2norm_bwd(y.data<float>(), rn.data<float>(), g[0].data<float>(), dx.data<float>(), rows, dim);
    return {dx};
  });
}

Variable softmax(const Variable& x) {
  Tensor tx = f32_contiguous(x, "softmax", "input");
  int64_t dim = tx.dim(-1), rows = tx.numel() / dim;
  Tensor y = Tensor::empty(tx.shape());
  kernels::softmax_fwd(tx.data<float>(), y.data<float>(), rows, dim);
  return record1("softmax", {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(y.shape());
    kernels::softmax_bwd(y.data<float>(), g[0].data<float>(), dx.data<float>(), rows, dim);
    return {dx};
  });
}

Variable log_softmax(const Variable& x) {
  Tensor tx = f32_contiguous(x, "log_softmax", "input");
  int64_t dim = tx.dim(-1), rows = tx.numel() / dim;
  Tensor y = Tensor::empty(tx.shape());
  kernels::log_softmax_fwd(tx.data<float>(), y.data<float>(), rows, dim);
  return record1("log_softmax", {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(y.shape());
    kernels::log_softmax_bwd(y.data<float>(), g[0].data<float>(), dx.data<float>(), rows, dim);
    return {dx};
  });
}

}  // namespace sw::ops
