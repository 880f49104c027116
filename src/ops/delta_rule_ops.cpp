// Delta-rule ops over the kernels of kernels/linear/delta_rule.h and dplr_delta_rule.h: argument
// checks (errors name the op and the shapes), the kernel call, and a backward closure that keeps
// only the inputs (the kernels' backward recomputes every state it needs).
#include "ops/delta_rule_ops.h"
#include "ops/input_checks.h"

#include <limits>

#include "kernels/linear/delta_rule.h"
#include "kernels/linear/dplr_delta_rule.h"

namespace sw::ops {
namespace {

// The kernels index with int dimensions.
constexpr int64_t kMaxDim = std::numeric_limits<int>::max();

using detail::f32_input;
Tensor f32_input(const Variable& x, const char* op, const char* name) {
  SW_CHECK(x.defined(), op, name, " is undefined");
  return f32_input(x.data(), op, name);
}

using detail::expect_shape;

struct Dims {
  int64_t B, T, H, K, V;
};

// q-like [B, T, H, K] and v-like [B, T, H, V]; every other input is checked against these.
Dims dims_of(const Tensor& q, const Tensor& v, const char* op, const char* qname) {
  SW_CHECK(q.ndim() == 4, op, qname, " must be [B, T, H, K], got ", q.describe());
  Dims d{q.dim(0), q.dim(1), q.dim(2), q.dim(3), 0};
  SW_CHECK(v.ndim() == 4 && v.dim(0) == d.B && v.dim(1) == d.T && v.dim(2) == d.H, op, "v must be [", d.B, ", ", d.T,
           ", ", d.H, ", V], got ", v.describe(), " beside ", qname, " ", q.describe());
  d.V = v.dim(3);
  SW_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.K > 0 && d.V > 0, op, "empty input: ", qname, " ", q.describe(), ", v ",
           v.describe());
  SW_CHECK(d.B * d.T * d.H <= kMaxDim && d.K <= kMaxDim && d.V <= kMaxDim, op, "input too large: ", q.describe());
  return d;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
RecurrentOutput delta_rule(const Variable& q, const Variable& k, const Variable& v, const Variable& beta,
                           const Variable* g, const Variable* h0, double scale, int64_t chunk) {
  const char* op = "delta_rule";
  Tensor tq = f32_input(q, op, "q"), tk = f32_input(k, op, "k"), tv = f32_input(v, op, "v");
  Tensor tb = f32_input(beta, op, "beta");
  const Dims d = dims_of(tq, tv, op, "q");
  expect_shape(tk, tq.shape(), op, "k");
  expect_shape(tb, {d.B, d.T, d.H}, op, "beta");
  Tensor tg, th0;
  if (g) {
    tg = f32_input(*g, op, "g");
    expect_shape(tg, {d.B, d.T, d.H}, op, "g");
  }
  if (h0) {
    th0 = f32_input(*h0, op, "h0");
    expect_shape(th0, {d.B, d.H, d.K, d.V}, op, "h0");
  }
  SW_CHECK(chunk >= 1 && chunk <= 1024, op, "chunk must be in [1, 1024], got ", chunk);
  const int B = int(d.B), T = int(d.T), H = int(d.H), K = int(d.K), V = int(d.V), C = int(chunk);
  const float s = static_cast<float>(scale);
  Tensor o = Tensor::empty({d.B, d.T, d.H, d.V}), ht = Tensor::empty({d.B, d.H, d.K, d.V});
  kernels::delta_rule_chunk_fwd(tq.data<float>(), tk.data<float>(), tv.data<float>(), tb.data<float>(),
                                tg.defined() ? tg.data<float>() : nullptr, th0.defined() ? th0.data<float>() : nullptr,
                                o.data<float>(), ht.data<float>(), B, T, H, K, V, s, C);
  std::vector<Variable> in = {q, k, v, beta, g ? *g : Variable(), h0 ? *h0 : Variable()};
  const bool need_g = g && g->requires_grad(), need_h0 = h0 && h0->requires_grad();
  std::vector<Variable> out = record(op, in, {o, ht}, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
    Tensor d_o = grads[0].contiguous(), dht = grads[1].contiguous();
    Tensor dq = Tensor::empty(tq.shape()), dk = Tensor::empty(tk.shape()), dv = Tensor::empty(tv.shape());
    Tensor dbeta = Tensor::empty(tb.shape());
    Tensor dg = need_g ? Tensor::empty(tg.shape()) : Tensor(), dh0 = need_h0 ? Tensor::empty(th0.shape()) : Tensor();
    kernels::delta_rule_chunk_bwd(
        tq.data<float>(), tk.data<float>(), tv.data<float>(), tb.data<float>(),
        tg.defined() ? tg.data<float>() : nullptr, th0.defined() ? th0.data<float>() : nullptr, d_o.data<float>(),
        dht.data<float>(), dq.data<float>(), dk.data<float>(), dv.data<float>(), dbeta.data<float>(),
        need_g ? dg.data<float>() : nullptr, need_h0 ? dh0.data<float>() : nullptr, B, T, H, K, V, s, C);
    return {dq, dk, dv, dbeta, dg, dh0};
  });
  return {out[0], out[1]};
}

Tensor delta_rule_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor* g,
                       Tensor& state, double scale) {
  const char* op = "delta_rule_step";
  Tensor tq = f32_input(q, op, "q"), tk = f32_input(k, op, "k");
  Tensor tv = f32_input(v, op, "v"), tb = f32_input(beta, op, "beta");
  const Dims d = dims_of(tq, tv, op, "q");
  SW_CHECK(d.T == 1, op, "decodes one token: q must be [B, 1, H, K], got ", tq.describe());
  expect_shape(tk, tq.shape(), op, "k");
  expect_shape(tb, {d.B, 1, d.H}, op, "beta");
  Tensor tg;
  if (g) {
    tg = f32_input(*g, op, "g");
    expect_shape(tg, {d.B, 1, d.H}, op, "g");
  }
  SW_CHECK(state.dtype() == DType::f32 && state.is_contiguous(), op, "state must be contiguous f32, got ",
           state.describe());
  expect_shape(state, {d.B, d.H, d.K, d.V}, op, "state");
  Tensor o = Tensor::empty({d.B, 1, d.H, d.V});
  kernels::delta_rule_step(tq.data<float>(), tk.data<float>(), tv.data<float>(), tb.data<float>(),
                           tg.defined() ? tg.data<float>() : nullptr, state.data<float>(), o.data<float>(), int(d.B),
                           int(d.H), int(d.K), int(d.V), static_cast<float>(scale));
  return o;
}

// ---------------------------------------------------------------------------------------------------
RecurrentOutput dplr_delta_rule(const Variable& r, const Variable& w, const Variable& k, const Variable& v,
                                const Variable& a, const Variable& b, const Variable* h0, double scale, int64_t chunk) {
  const char* op = "dplr_delta_rule";
  Tensor tr = f32_input(r, op, "r"), tw = f32_input(w, op, "w"), tk = f32_input(k, op, "k");
  Tensor tv = f32_input(v, op, "v"), ta = f32_input(a, op, "a"), tb = f32_input(b, op, "b");
  const Dims d = dims_of(tr, tv, op, "r");
  expect_shape(tw, tr.shape(), op, "w");
  expect_shape(tk, tr.shape(), op, "k");
  expect_shape(ta, tr.shape(), op, "a");
  expect_shape(tb, tr.shape(), op, "b");
  Tensor th0;
  if (h0) {
    th0 = f32_input(*h0, op, "h0");
    expect_shape(th0, {d.B, d.H, d.K, d.V}, op, "h0");
  }
  SW_CHECK(chunk >= 1 && chunk <= 1024, op, "chunk must be in [1, 1024], got ", chunk);
  const int B = int(d.B), T = int(d.T), H = int(d.H), K = int(d.K), V = int(d.V), C = int(chunk);
  const float s = static_cast<float>(scale);
  Tensor o = Tensor::empty({d.B, d.T, d.H, d.V}), ht = Tensor::empty({d.B, d.H, d.K, d.V});
  kernels::dplr_delta_rule_chunk_fwd(tr.data<float>(), tw.data<float>(), tk.data<float>(), tv.data<float>(),
                                     ta.data<float>(), tb.data<float>(), th0.defined() ? th0.data<float>() : nullptr,
                                     o.data<float>(), ht.data<float>(), B, T, H, K, V, s, C);
  std::vector<Variable> in = {r, w, k, v, a, b, h0 ? *h0 : Variable()};
  const bool need_h0 = h0 && h0->requires_grad();
  std::vector<Variable> out = record(op, in, {o, ht}, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
    Tensor d_o = grads[0].contiguous(), dht = grads[1].contiguous();
    Tensor dr = Tensor::empty(tr.shape()), dw = Tensor::empty(tw.shape()), dk = Tensor::empty(tk.shape());
    Tensor dv = Tensor::empty(tv.shape()), da = Tensor::empty(ta.shape()), db = Tensor::empty(tb.shape());
    Tensor dh0 = need_h0 ? Tensor::empty(th0.shape()) : Tensor();
    kernels::dplr_delta_rule_recurrent_bwd(
        tr.data<float>(), tw.data<float>(), tk.data<float>(), tv.data<float>(), ta.data<float>(), tb.data<float>(),
        th0.defined() ? th0.data<float>() : nullptr, d_o.data<float>(), dht.data<float>(), dr.data<float>(),
        dw.data<float>(), dk.data<float>(), dv.data<float>(), da.data<float>(), db.data<float>(),
        need_h0 ? dh0.data<float>() : nullptr, B, T, H, K, V, s);
    return {dr, dw, dk, dv, da, db, dh0};
  });
  return {out[0], out[1]};
}

Tensor dplr_delta_rule_step(const Tensor& r, const Tensor& w, const Tensor& k, const Tensor& v, const Tensor& a,
                            const Tensor& b, Tensor& state, double scale) {
  const char* op = "dplr_delta_rule_step";
  Tensor tr = f32_input(r, op, "r"), tw = f32_input(w, op, "w");
  Tensor tk = f32_input(k, op, "k"), tv = f32_input(v, op, "v");
  Tensor ta = f32_input(a, op, "a"), tb = f32_input(b, op, "b");
  const Dims d = dims_of(tr, tv, op, "r");
  SW_CHECK(d.T == 1, op, "decodes one token: r must be [B, 1, H, K], got ", tr.describe());
  expect_shape(tw, tr.shape(), op, "w");
  expect_shape(tk, tr.shape(), op, "k");
  expect_shape(ta, tr.shape(), op, "a");
  expect_shape(tb, tr.shape(), op, "b");
  SW_CHECK(state.dtype() == DType::f32 && state.is_contiguous(), op, "state must be contiguous f32, got ",
           state.describe());
  expect_shape(state, {d.B, d.H, d.K, d.V}, op, "state");
  Tensor o = Tensor::empty({d.B, 1, d.H, d.V});
  kernels::dplr_delta_rule_step(tr.data<float>(), tw.data<float>(), tk.data<float>(), tv.data<float>(),
                                ta.data<float>(), tb.data<float>(), state.data<float>(), o.data<float>(), int(d.B),
                                int(d.H), int(d.K), int(d.V), static_cast<float>(scale));
  return o;
}

}  // namespace sw::ops
