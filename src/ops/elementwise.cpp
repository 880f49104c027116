#include <algorithm>

#include "kernels/elementwise/activations.h"
#include "ops/ops.h"

namespace sw::ops {
namespace {

enum class BinOp { add, sub, mul };

Shape broadcast_shape(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    SW_CHECK(da == db || da == 1 || db == 1, op, "shapes ", shape_str(a), " and ", shape_str(b),
             " do not broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;  // not max: a length-0 dim against 1 stays 0
  }
  return out;
}

// Element strides of a contiguous tensor of shape s seen through the broadcast shape out (0 where
// the dim is broadcast).
Shape broadcast_strides(const Shape& s, const Shape& out) {
  Shape st(out.size(), 0);
  Shape cs = contiguous_strides(s);
  size_t off = out.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i) st[off + i] = s[i] == 1 ? 0 : cs[i];
  return st;
}

// Runs f(y_index, a_offset, b_offset) over the output with rows of the last dim as the inner loop.
template <class F>
void for_each_broadcast(const Shape& out, const Shape& sa, const Shape& sb, F f) {
  int64_t nd = static_cast<int64_t>(out.size());
  int64_t inner = nd ? out[nd - 1] : 1;
  int64_t rows = inner ? shape_numel(out) / inner : 0;
  int64_t ia = nd ? sa[nd - 1] : 0, ib = nd ? sb[nd - 1] : 0;
#pragma omp parallel for schedule(static) if (rows * inner > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    int64_t oa = 0, ob = 0, rem = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t i = rem % out[d];
      rem /= out[d];
      oa += i * sa[d];
      ob += i * sb[d];
    }
    for (int64_t j = 0; j < inner; ++j) f(r * inner + j, oa + j * ia, ob + j * ib);
  }
}

// Sums g (shape out) down to shape s (the broadcast source shape).
Tensor reduce_to(const Tensor& g, const Shape& s) {
  if (g.shape() == s) return g;
  Shape out = g.shape();
  Shape st = broadcast_strides(s, out);
  Tensor r = Tensor::zeros(s);
  float* rp = r.data<float>();
  const float* gp = g.data<float>();
  // Serial: several output elements may map to one reduced element.
  int64_t nd = static_cast<int64_t>(out.size());
  int64_t n = g.numel();
  std::vector<int64_t> idx(nd, 0);
  int64_t o = 0;
  for (int64_t i = 0; i < n; ++i) {
    rp[o] += gp[i];
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++idx[d] < out[d]) {
        o += st[d];
        break;
      }
      o -= st[d] * (out[d] - 1);
      idx[d] = 0;
    }
  }
  return r;
}

Variable binary(BinOp op, const Variable& a, const Variable& b) {
  const char* name = op == BinOp::add ? "add" : op == BinOp::sub ? "sub" : "mul";
  Tensor ta = a.data().contiguous(), tb = b.data().contiguous();
  SW_CHECK(ta.dtype() == DType::f32 && tb.dtype() == DType::f32, name, "needs f32 inputs, got ", ta.describe(), " and ",
           tb.describe());
  Shape out = broadcast_shape(ta.shape(), tb.shape(), name);
  Tensor y = Tensor::empty(out);
  const float* pa = ta.data<float>();
  const float* pb = tb.data<float>();
  float* py = y.data<float>();
  if (ta.shape() == out && tb.shape() == out) {
    int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i)
      py[i] = op == BinOp::add ? pa[i] + pb[i] : op == BinOp::sub ? pa[i] - pb[i] : pa[i] * pb[i];
  } else {
    Shape sa = broadcast_strides(ta.shape(), out), sb = broadcast_strides(tb.shape(), out);
    for_each_broadcast(out, sa, sb, [&](int64_t i, int64_t ia, int64_t ib) {
      py[i] = op == BinOp::add ? pa[ia] + pb[ib] : op == BinOp::sub ? pa[ia] - pb[ib] : pa[ia] * pb[ib];
    });
  }
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  return record1(name, {a, b}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    const Tensor& gy = g[0];
    Tensor ga, gb;
    if (op == BinOp::mul) {
      // d(a*b)/da = g * b (broadcast), then summed back to a's shape.
      auto times = [&](const Tensor& other) {
        Tensor r = Tensor::empty(out);
        Shape so = broadcast_strides(other.shape(), out), sg = contiguous_strides(out);
        const float* po = other.data<float>();
        const float* pg = gy.data<float>();
        float* pr = r.data<float>();
        for_each_broadcast(out, sg, so, [&](int64_t i, int64_t ig, int64_t io) { pr[i] = pg[ig] * po[io]; });
        return r;
      };
      if (need_a) ga = reduce_to(times(tb), ta.shape());
      if (need_b) gb = reduce_to(times(ta), tb.shape());
    } else {
      if (need_a) ga = reduce_to(gy, ta.shape());
      if (need_b) {
        gb = reduce_to(gy, tb.shape());
        if (op == BinOp::sub) {
          gb = gb.clone();
          float* p = gb.data<float>();
          for (int64_t i = 0; i < gb.numel(); ++i) p[i] = -p[i];
        }
      }
    }
    return {ga, gb};
  });
}

}  // namespace

Variable add(const Variable& a, const Variable& b) { return binary(BinOp::add, a, b); }
Variable sub(const Variable& a, const Variable& b) { return binary(BinOp::sub, a, b); }
Variable mul(const Variable& a, const Variable& b) { return binary(BinOp::mul, a, b); }

Variable scale(const Variable& x, double s) {
  Tensor tx = x.data().contiguous();
  SW_CHECK(tx.dtype() == DType::f32, "scale", "needs f32, got ", tx.describe());
  Tensor y = Tensor::empty(tx.shape());
  const float* px = tx.data<float>();
  float* py = y.data<float>();
  float fs = static_cast<float>(s);
  int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) py[i] = px[i] * fs;
  return record1("scale", {x}, y, [fs](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor gx = Tensor::empty(g[0].shape());
    const float* pg = g[0].data<float>();
    float* p = gx.data<float>();
    for (int64_t i = 0; i < gx.numel(); ++i) p[i] = pg[i] * fs;
    return {gx};
  });
}

Variable add_scalar(const Variable& x, double s) {
  Tensor tx = x.data().contiguous();
  SW_CHECK(tx.dtype() == DType::f32, "add_scalar", "needs f32, got ", tx.describe());
  Tensor y = Tensor::empty(tx.shape());
  const float* px = tx.data<float>();
  float* py = y.data<float>();
  float fs = static_cast<float>(s);
  for (int64_t i = 0; i < y.numel(); ++i) py[i] = px[i] + fs;
  return record1("add_scalar", {x}, y, [](const std::vector<Tensor>& g) -> std::vector<Tensor> { return {g[0]}; });
}

Variable unary(kernels::Unary op, const Variable& x) {
  Tensor tx = x.data().contiguous();
  SW_CHECK(tx.dtype() == DType::f32, kernels::unary_name(op), "needs f32, got ", tx.describe());
  Tensor y = Tensor::empty(tx.shape());
  kernels::unary_fwd(op, tx.data<float>(), y.data<float>(), tx.numel());
  return record1(kernels::unary_name(op), {x}, y, [op, tx](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor gx = Tensor::empty(tx.shape());
    kernels::unary_bwd(op, tx.data<float>(), g[0].data<float>(), gx.data<float>(), tx.numel());
    return {gx};
  });
}

Variable swiglu(const Variable& gate, const Variable& up) {
  Tensor tg = gate.data().contiguous(), tu = up.data().contiguous();
  SW_CHECK(tg.shape() == tu.shape(), "swiglu", "gate ", tg.describe(), " and up ", tu.describe(), " must match");
  SW_CHECK(tg.dtype() == DType::f32 && tu.dtype() == DType::f32, "swiglu", "needs f32 inputs");
  Tensor y = Tensor::empty(tg.shape());
  kernels::swiglu_fwd(tg.data<float>(), tu.data<float>(), y.data<float>(), y.numel());
  return record1("swiglu", {gate, up}, y, [tg, tu](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dg = Tensor::empty(tg.shape()), du = Tensor::empty(tu.shape());
    kernels::swiglu_bwd(tg.data<float>(), tu.data<float>(), g[0].data<float>(), dg.data<float>(), du.data<float>(),
                        tg.numel());
    return {dg, du};
  });
}

}  // namespace sw::ops
