// Lightning attention ops over kernels/linear/lightning_attention.h: argument checks (errors name the
// op and the shapes), the kernel call, and a backward closure that keeps the inputs and the state
// entering each block.
#include "ops/lightning_ops.h"
#include "ops/input_checks.h"

#include <cmath>
#include <limits>

#include "kernels/linear/gated_linear_attention.h"

namespace sw::ops {
namespace {

// The kernels index (b, t, h) rows with int64 products; keep the row count sane as the GLA ops do.
constexpr int64_t kMaxRows = std::numeric_limits<int>::max();

using detail::f32_input;

using detail::expect_shape;

kernels::LightningDims dims_of(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  SW_CHECK(q.ndim() == 4, op, "q must be [B, T, H, K], got ", q.describe());
  kernels::LightningDims d{q.dim(0), q.dim(1), q.dim(2), q.dim(3), 0};
  expect_shape(k, q.shape(), op, "k (same shape as q)");
  SW_CHECK(v.ndim() == 4 && v.dim(0) == d.batch && v.dim(1) == d.seq_len && v.dim(2) == d.heads, op,
           "v must be [", d.batch, ", ", d.seq_len, ", ", d.heads, ", V], got ", v.describe(), " beside q ",
           q.describe());
  d.value_dim = v.dim(3);
  SW_CHECK(d.batch > 0 && d.seq_len > 0 && d.heads > 0 && d.key_dim > 0 && d.value_dim > 0, op,
           "empty input: q ", q.describe(), ", v ", v.describe());
  SW_CHECK(d.batch * d.seq_len * d.heads <= kMaxRows, op, "input too large: q ", q.describe());
  return d;
}

// g [H], finite (the decay is exp(g); g <= 0 is the meaningful range, the kernel computes any
// finite value while lambda^block_size fits fp32).
Tensor decay_input(const Tensor& g, int64_t heads, const char* op) {
  Tensor t = f32_input(g, op, "g");
  expect_shape(t, {heads}, op, "g (one log decay per head)");
  const float* p = t.data<float>();
  for (int64_t h = 0; h < heads; ++h)
    SW_CHECK(std::isfinite(p[h]), op, "g[", h, "] must be finite, got ", p[h]);
  return t;
}

}  // namespace

LightningOutput lightning_attention(const Variable& q, const Variable& k, const Variable& v, const Variable& g,
                                    const Variable* h0, double scale, int64_t block_size) {
  const char* op = "lightning_attention";
  SW_CHECK(q.defined() && k.defined() && v.defined() && g.defined(), op, "q, k, v and g must be defined");
  Tensor tq = f32_input(q.data(), op, "q"), tk = f32_input(k.data(), op, "k"), tv = f32_input(v.data(), op, "v");
  const kernels::LightningDims d = dims_of(tq, tk, tv, op);
  Tensor tg = decay_input(g.data(), d.heads, op);
  Tensor th0;
  if (h0) {
    SW_CHECK(h0->defined(), op, "h0 is undefined");
    th0 = f32_input(h0->data(), op, "h0");
    expect_shape(th0, {d.batch, d.heads, d.key_dim, d.value_dim}, op, "h0");
  }
  SW_CHECK(block_size >= 1 && block_size <= 1024, op, "block_size must be in [1, 1024], got ", block_size);
  SW_CHECK(std::isfinite(scale), op, "scale must be finite, got ", scale);
  const float s = static_cast<float>(scale);
  const float* ph0 = th0.defined() ? th0.data<float>() : nullptr;
  std::vector<Variable> in = {q, k, v, g, h0 ? *h0 : Variable()};
  Tensor o = Tensor::empty({d.batch, d.seq_len, d.heads, d.value_dim});
  Tensor ht = Tensor::empty({d.batch, d.heads, d.key_dim, d.value_dim});
  if (!any_requires_grad(in)) {
    kernels::lightning_forward(d, s, block_size, tq.data<float>(), tk.data<float>(), tv.data<float>(),
                               tg.data<float>(), ph0, o.data<float>(), ht.data<float>(), nullptr);
    std::vector<Variable> out = record(op, in, {o, ht}, nullptr);
    return {out[0], out[1]};
  }
  const int64_t nb = kernels::lightning_num_blocks(d.seq_len, block_size);
  Tensor states = Tensor::empty({d.batch, d.heads, nb, d.key_dim, d.value_dim});
  kernels::lightning_forward(d, s, block_size, tq.data<float>(), tk.data<float>(), tv.data<float>(),
                             tg.data<float>(), ph0, o.data<float>(), ht.data<float>(), states.data<float>());
  const bool need_g = g.requires_grad(), need_h0 = h0 && h0->requires_grad();
  std::vector<Variable> out =
      record(op, in, {o, ht}, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
        Tensor d_o = grads[0].contiguous(), dht = grads[1].contiguous();
        Tensor dq = Tensor::empty(tq.shape()), dk = Tensor::empty(tk.shape()), dv = Tensor::empty(tv.shape());
        Tensor dg = need_g ? Tensor::empty(tg.shape()) : Tensor();
        Tensor dh0 = need_h0 ? Tensor::empty(th0.shape()) : Tensor();
        kernels::lightning_backward(d, s, block_size, tq.data<float>(), tk.data<float>(), tv.data<float>(),
                                    tg.data<float>(), th0.defined() ? th0.data<float>() : nullptr,
                                    states.data<float>(), d_o.data<float>(), dht.data<float>(), dq.data<float>(),
                                    dk.data<float>(), dv.data<float>(), need_g ? dg.data<float>() : nullptr,
                                    need_h0 ? dh0.data<float>() : nullptr);
        return {dq, dk, dv, dg, dh0};
      });
  return {out[0], out[1]};
}

Tensor lightning_attention_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, Tensor& state,
                                double scale) {
  const char* op = "lightning_attention_step";
  Tensor tq = f32_input(q, op, "q"), tk = f32_input(k, op, "k"), tv = f32_input(v, op, "v");
  const kernels::LightningDims d = dims_of(tq, tk, tv, op);
  SW_CHECK(d.seq_len == 1, op, "decodes one token: q must be [B, 1, H, K], got ", tq.describe());
  Tensor tg = decay_input(g, d.heads, op);
  SW_CHECK(state.defined() && state.dtype() == DType::f32 && state.is_contiguous(), op,
           "state must be contiguous f32, got ", state.defined() ? state.describe() : std::string("undefined"));
  expect_shape(state, {d.batch, d.heads, d.key_dim, d.value_dim}, op, "state");
  Tensor o = Tensor::empty({d.batch, 1, d.heads, d.value_dim});
  kernels::gla_step(d.batch, d.heads, d.key_dim, d.value_dim, kernels::GlaGate::kHeadConst, static_cast<float>(scale),
                    tq.data<float>(), tk.data<float>(), tv.data<float>(), tg.data<float>(), nullptr,
                    state.data<float>(), o.data<float>());
  return o;
}

}  // namespace sw::ops
