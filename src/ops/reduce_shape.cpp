// Reductions, scans and shape ops.
#include <cstring>

#include "kernels/reduce/reduce.h"
#include "ops/ops.h"

namespace sw::ops {
namespace {

struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1, dim = 0;
};

AxisSplit split_axis(const Shape& s, int64_t dim, const char* op) {
  int64_t nd = static_cast<int64_t>(s.size());
  SW_CHECK(dim >= -nd && dim < nd, op, "dim ", dim, " out of range for shape ", shape_str(s));
  AxisSplit a;
  a.dim = dim < 0 ? dim + nd : dim;
  for (int64_t i = 0; i < a.dim; ++i) a.outer *= s[i];
  a.n = s[a.dim];
  for (int64_t i = a.dim + 1; i < nd; ++i) a.inner *= s[i];
  return a;
}

Tensor f32c(const Variable& v, const char* op) {
  Tensor t = v.data().contiguous();
  SW_CHECK(t.dtype() == DType::f32, op, "needs f32, got ", t.describe());
  return t;
}

}  // namespace

Variable sum(const Variable& x, int64_t dim) {
  Tensor tx = f32c(x, "sum");
  AxisSplit a = split_axis(tx.shape(), dim, "sum");
  Shape ys = tx.shape();
  ys.erase(ys.begin() + a.dim);
  Tensor y = Tensor::empty(ys);
  kernels::sum_axis_fwd(tx.data<float>(), y.data<float>(), a.outer, a.n, a.inner);
  Shape xs = tx.shape();
  return record1("sum", {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(xs);
    kernels::sum_axis_bwd(g[0].data<float>(), dx.data<float>(), a.outer, a.n, a.inner);
    return {dx};
  });
}

Variable mean(const Variable& x, int64_t dim) {
  int64_t n = x.data().dim(dim);
  return scale(sum(x, dim), 1.0 / static_cast<double>(n));
}

Variable sum(const Variable& x) { return sum(reshape(x, {1, x.numel()}), 1); }
Variable mean(const Variable& x) { return scale(sum(x), 1.0 / static_cast<double>(x.numel())); }

Variable cumsum(const Variable& x, int64_t dim) {
  Tensor tx = f32c(x, "cumsum");
  AxisSplit a = split_axis(tx.shape(), dim, "cumsum");
  Tensor y = Tensor::empty(tx.shape());
  kernels::cumsum_fwd(tx.data<float>(), y.data<float>(), a.outer, a.n, a.inner);
  return record1("cumsum", {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(g[0].shape());
    kernels::cumsum_bwd(g[0].data<float>(), dx.data<float>(), a.outer, a.n, a.inner);
    return {dx};
  });
}

Variable reshape(const Variable& x, const Shape& shape) {
  Tensor y = x.data().contiguous().reshape(shape);
  Shape xs = x.shape();
  return record1("reshape", {x}, y, [xs](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {g[0].contiguous().reshape(xs)};
  });
}

Variable transpose(const Variable& x, int64_t d0, int64_t d1) {
  Tensor y = x.data().transpose(d0, d1).contiguous();
  return record1("transpose", {x}, y, [d0, d1](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {g[0].transpose(d0, d1).contiguous()};
  });
}

Variable slice(const Variable& x, int64_t dim, int64_t start, int64_t end) {
  Tensor y = x.data().slice(dim, start, end).contiguous();
  Shape xs = x.shape();
  return record1("slice", {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::zeros(xs);
    dx.slice(dim, start, end).copy_from(g[0]);
    return {dx};
  });
}

Variable concat(const std::vector<Variable>& xs, int64_t dim) {
  SW_CHECK(!xs.empty(), "concat", "needs at least one input");
  Shape s0 = xs[0].shape();
  int64_t nd = static_cast<int64_t>(s0.size());
  SW_CHECK(dim >= -nd && dim < nd, "concat", "dim ", dim, " out of range for shape ", shape_str(s0));
  int64_t d = dim < 0 ? dim + nd : dim;
  Shape ys = s0;
  ys[d] = 0;
  std::vector<int64_t> offsets;
  for (const Variable& v : xs) {
    Shape s = v.shape();
    SW_CHECK(s.size() == s0.size(), "concat", "input ranks differ: ", shape_str(s0), " and ", shape_str(s));
    s[d] = s0[d];
    SW_CHECK(s == s0, "concat", "input shapes ", shape_str(s0), " and ", shape_str(v.shape()), " differ outside dim ", d);
    offsets.push_back(ys[d]);
    ys[d] += v.shape()[d];
  }
  Tensor y = Tensor::empty(ys);
  for (size_t i = 0; i < xs.size(); ++i) y.slice(d, offsets[i], offsets[i] + xs[i].shape()[d]).copy_from(xs[i].data());
  std::vector<Shape> shapes;
  for (const Variable& v : xs) shapes.push_back(v.shape());
  return record1("concat", xs, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    std::vector<Tensor> out;
    for (size_t i = 0; i < shapes.size(); ++i) out.push_back(g[0].slice(d, offsets[i], offsets[i] + shapes[i][d]).contiguous());
    return out;
  });
}

}  // namespace sw::ops
