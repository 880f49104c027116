#include "ops/rows_ops.h"

#include <vector>

#include "kernels/moe/moe_dispatch.h"
#include "ops/input_checks.h"

namespace sw::ops {
namespace {

// The inverse of a row selection: inv[n] = m where rows[m] = n, or -1. Checks range and distinctness.
Tensor inverse_rows(const Tensor& rows, int64_t n, const char* op) {
  SW_CHECK(rows.defined() && rows.dtype() == DType::i32 && rows.ndim() == 1, op, "rows must be i32 [M], got ",
           rows.defined() ? rows.describe() : std::string("undefined"));
  const Tensor r = rows.contiguous();
  const int32_t* p = r.data<int32_t>();
  Tensor inv = Tensor::full({n}, -1.0, DType::i32);
  int32_t* q = inv.data<int32_t>();
  for (int64_t m = 0; m < r.numel(); ++m) {
    SW_CHECK(p[m] >= 0 && p[m] < n, op, "row ", p[m], " (entry ", m, ") out of range [0, ", n, ")");
    SW_CHECK(q[p[m]] < 0, op, "row ", p[m], " selected twice (entries ", q[p[m]], " and ", m, ")");
    q[p[m]] = static_cast<int32_t>(m);
  }
  return inv;
}

}  // namespace

Variable gather_rows(const Variable& x, const Tensor& rows) {
  const Tensor tx = detail::f32_input(x.data(), "gather_rows", "x");
  SW_CHECK(tx.ndim() == 2, "gather_rows", "x must be f32 [N, D], got ", tx.describe());
  const int64_t N = tx.dim(0), D = tx.dim(1);
  const Tensor inv = inverse_rows(rows, N, "gather_rows");
  const Tensor r = rows.contiguous();
  const int64_t M = r.numel();
  Tensor y = Tensor::empty({M, D});
  kernels::moe_gather(tx.data<float>(), r.data<int32_t>(), M, 1, D, y.data<float>());
  return record1("gather_rows", {x}, y, [inv, N, D](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor dy = g[0].contiguous();
    Tensor dx = Tensor::empty({N, D});
    kernels::moe_gather_backward(dy.data<float>(), inv.data<int32_t>(), N, 1, D, dx.data<float>());
    return {dx};
  });
}

Variable scatter_rows(const Variable& src, const Tensor& rows, int64_t n) {
  const Tensor ts = detail::f32_input(src.data(), "scatter_rows", "src");
  SW_CHECK(ts.ndim() == 2, "scatter_rows", "src must be f32 [M, D], got ", ts.describe());
  SW_CHECK(n >= 0, "scatter_rows", "n must be >= 0, got ", n);
  const int64_t M = ts.dim(0), D = ts.dim(1);
  SW_CHECK(rows.defined() && rows.numel() == M, "scatter_rows", "rows must hold one entry per row of src (", M,
           "), got ", rows.defined() ? rows.describe() : std::string("undefined"));
  const Tensor inv = inverse_rows(rows, n, "scatter_rows");
  const Tensor r = rows.contiguous();
  Tensor y = Tensor::empty({n, D});
  kernels::moe_combine(ts.data<float>(), inv.data<int32_t>(), nullptr, n, 1, D, y.data<float>());
  return record1("scatter_rows", {src}, y, [r, M, D](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor dy = g[0].contiguous();
    Tensor ds = Tensor::empty({M, D});
    kernels::moe_gather(dy.data<float>(), r.data<int32_t>(), M, 1, D, ds.data<float>());
    return {ds};
  });
}

}  // namespace sw::ops
