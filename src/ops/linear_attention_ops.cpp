// Gated-linear-attention ops over kernels/linear/gated_linear_attention.h: argument checks (errors
// name the op and the shapes), the kernel call, and a backward closure that keeps only the inputs
// and, on the training path, the per-chunk states the chunkwise backward starts from.
#include "ops/linear_attention_ops.h"
#include "ops/input_checks.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace sw::ops {
namespace {

using kernels::GlaGate;

// The kernels take int64 dimensions but index (b, t, h) rows with plain products; keep them sane.
constexpr int64_t kMaxRows = std::numeric_limits<int>::max();

const char* gate_name(GlaGate g) {
  switch (g) {
    case GlaGate::kNone: return "none";
    case GlaGate::kHeadConst: return "head_const";
    case GlaGate::kScalar: return "scalar";
    case GlaGate::kChannel: return "channel";
  }
  return "?";
}

using detail::f32_input;

using detail::expect_shape;

// q-like [B, T, H, K] and v-like [B, T, H, V]; every other input is checked against these.
kernels::GlaDims dims_of(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  SW_CHECK(q.ndim() == 4, op, "q must be [B, T, H, K], got ", q.describe());
  kernels::GlaDims d{q.dim(0), q.dim(1), q.dim(2), q.dim(3), 0};
  expect_shape(k, q.shape(), op, "k (same shape as q)");
  SW_CHECK(v.ndim() == 4 && v.dim(0) == d.batch && v.dim(1) == d.seq_len && v.dim(2) == d.heads, op, "v must be [",
           d.batch, ", ", d.seq_len, ", ", d.heads, ", V], got ", v.describe(), " beside q ", q.describe());
  d.value_dim = v.dim(3);
  SW_CHECK(d.batch > 0 && d.seq_len > 0 && d.heads > 0 && d.key_dim > 0 && d.value_dim > 0, op,
           "empty input: q ", q.describe(), ", v ", v.describe());
  SW_CHECK(d.batch * d.seq_len * d.heads <= kMaxRows, op, "input too large: q ", q.describe());
  return d;
}

// The gate tensor's shape for this gate mode and these dims (tokens = T, or 1 for a step).
Shape gate_shape(GlaGate gate, const kernels::GlaDims& d) {
  switch (gate) {
    case GlaGate::kHeadConst: return {d.heads};
    case GlaGate::kScalar: return {d.batch, d.seq_len, d.heads};
    case GlaGate::kChannel: return {d.batch, d.seq_len, d.heads, d.key_dim};
    case GlaGate::kNone: break;
  }
  return {};
}

Tensor gate_input(GlaGate gate, const Tensor* g, const kernels::GlaDims& d, const char* op) {
  if (gate == GlaGate::kNone) {
    SW_CHECK(g == nullptr, op, "gate mode none takes no g, got ", g->describe());
    return Tensor();
  }
  SW_CHECK(g != nullptr, op, "gate mode ", gate_name(gate), " needs g of shape ", shape_str(gate_shape(gate, d)));
  Tensor t = f32_input(*g, op, "g");
  expect_shape(t, gate_shape(gate, d), op, "g");
  return t;
}

const float* ptr(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
float* mut_ptr(Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

}  // namespace

GlaOutput gated_linear_attention(const Variable& q, const Variable& k, const Variable& v, GlaGate gate,
                                 const Variable* g, const Variable* u, const Variable* h0, double scale,
                                 int64_t chunk_size) {
  const char* op = "gated_linear_attention";
  SW_CHECK(q.defined() && k.defined() && v.defined(), op, "q, k and v must be defined");
  Tensor tq = f32_input(q.data(), op, "q"), tk = f32_input(k.data(), op, "k"), tv = f32_input(v.data(), op, "v");
  const kernels::GlaDims d = dims_of(tq, tk, tv, op);
  Tensor tg_in = g ? g->data() : Tensor();
  Tensor tg = gate_input(gate, g ? &tg_in : nullptr, d, op);
  Tensor tu, th0;
  if (u) {
    tu = f32_input(u->data(), op, "u");
    expect_shape(tu, {d.heads, d.key_dim}, op, "u");
  }
  if (h0) {
    th0 = f32_input(h0->data(), op, "h0");
    expect_shape(th0, {d.batch, d.heads, d.key_dim, d.value_dim}, op, "h0");
  }
  SW_CHECK(chunk_size >= 1 && chunk_size <= 1024, op, "chunk_size must be in [1, 1024], got ", chunk_size);
  const float s = static_cast<float>(scale);
  std::vector<Variable> in = {q, k, v, g ? *g : Variable(), u ? *u : Variable(), h0 ? *h0 : Variable()};
  Tensor o = Tensor::empty({d.batch, d.seq_len, d.heads, d.value_dim});
  Tensor ht = Tensor::empty({d.batch, d.heads, d.key_dim, d.value_dim});
  if (!any_requires_grad(in)) {
    kernels::gla_forward_recurrent(d, gate, s, tq.data<float>(), tk.data<float>(), tv.data<float>(), ptr(tg), ptr(tu),
                                   ptr(th0), o.data<float>(), ht.data<float>());
    std::vector<Variable> out = record(op, in, {o, ht}, nullptr);
    return {out[0], out[1]};
  }
  const int64_t nt = kernels::gla_num_chunks(d.seq_len, chunk_size);
  Tensor chunk_states = Tensor::empty({d.batch, d.heads, nt, d.key_dim, d.value_dim});
  kernels::gla_forward_chunk(d, gate, s, chunk_size, tq.data<float>(), tk.data<float>(), tv.data<float>(), ptr(tg),
                             ptr(tu), ptr(th0), o.data<float>(), ht.data<float>(), chunk_states.data<float>());
  const bool need_g = g && g->requires_grad(), need_h0 = h0 && h0->requires_grad();
  std::vector<Variable> out =
      record(op, in, {o, ht}, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
        Tensor d_o = grads[0].contiguous(), dht = grads[1].contiguous();
        Tensor dq = Tensor::empty(tq.shape()), dk = Tensor::empty(tk.shape()), dv = Tensor::empty(tv.shape());
        // Data-dependent gates: the kernel keeps per-token terms in dg itself, so it is always given.
        const bool want_g = tg.defined() && (need_g || gate != GlaGate::kHeadConst);
        Tensor dg = want_g ? Tensor::empty(tg.shape()) : Tensor();
        Tensor du = tu.defined() ? Tensor::empty(tu.shape()) : Tensor();  // required by the kernel with u
        Tensor dh0 = need_h0 ? Tensor::empty(th0.shape()) : Tensor();
        kernels::gla_backward_chunk(d, gate, s, chunk_size, tq.data<float>(), tk.data<float>(), tv.data<float>(),
                                    ptr(tg), ptr(tu), ptr(th0), chunk_states.data<float>(), d_o.data<float>(),
                                    dht.data<float>(), dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                    mut_ptr(dg), mut_ptr(du), mut_ptr(dh0));
        return {dq, dk, dv, need_g ? dg : Tensor(), du, dh0};
      });
  return {out[0], out[1]};
}

Tensor gated_linear_attention_step(const Tensor& q, const Tensor& k, const Tensor& v, GlaGate gate, const Tensor* g,
                                   const Tensor* u, Tensor& state, double scale) {
  const char* op = "gated_linear_attention_step";
  Tensor tq = f32_input(q, op, "q"), tk = f32_input(k, op, "k"), tv = f32_input(v, op, "v");
  const kernels::GlaDims d = dims_of(tq, tk, tv, op);
  SW_CHECK(d.seq_len == 1, op, "decodes one token: q must be [B, 1, H, K], got ", tq.describe());
  Tensor tg = gate_input(gate, g, d, op);
  Tensor tu;
  if (u) {
    tu = f32_input(*u, op, "u");
    expect_shape(tu, {d.heads, d.key_dim}, op, "u");
  }
  SW_CHECK(state.defined() && state.dtype() == DType::f32 && state.is_contiguous(), op,
           "state must be contiguous f32, got ", state.defined() ? state.describe() : std::string("undefined"));
  expect_shape(state, {d.batch, d.heads, d.key_dim, d.value_dim}, op, "state");
  Tensor o = Tensor::empty({d.batch, 1, d.heads, d.value_dim});
  kernels::gla_step(d.batch, d.heads, d.key_dim, d.value_dim, gate, static_cast<float>(scale), tq.data<float>(),
                    tk.data<float>(), tv.data<float>(), ptr(tg), ptr(tu), state.data<float>(), o.data<float>());
  return o;
}

Variable linear_attention_normalize(const Variable& x, double eps) {
  const char* op = "linear_attention_normalize";
  SW_CHECK(x.defined(), op, "input is undefined");
  Tensor tx = f32_input(x.data(), op, "input");
  SW_CHECK(tx.ndim() >= 1 && tx.dim(-1) >= 2, op, "input must be [..., V + 1] with V >= 1, got ", tx.describe());
  SW_CHECK(eps >= 0, op, "eps must be non-negative, got ", eps);
  const int64_t w = tx.dim(-1), V = w - 1, rows = tx.numel() / w;
  Shape ys = tx.shape();
  ys.back() = V;
  Tensor y = Tensor::empty(ys), inv = Tensor::empty({rows});
  const float* px = tx.data<float>();
  float* py = y.data<float>();
  float* pinv = inv.data<float>();
  const float e = static_cast<float>(eps);
#pragma omp parallel for schedule(static) if (rows * w > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * w;
    const float rden = 1.f / (xr[V] + e);
    pinv[r] = rden;
    for (int64_t i = 0; i < V; ++i) py[r * V + i] = xr[i] * rden;
  }
  return record1(op, {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    // y_i = x_i / den:  dx_i = dy_i / den,  dden = -sum_i dy_i y_i / den.
    Tensor dy = g[0].contiguous(), dx = Tensor::empty(tx.shape());
    const float* pdy = dy.data<float>();
    const float* pyy = y.data<float>();
    const float* pi = inv.data<float>();
    float* pdx = dx.data<float>();
#pragma omp parallel for schedule(static) if (rows * w > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
      float acc = 0;
      for (int64_t i = 0; i < V; ++i) {
        pdx[r * w + i] = pdy[r * V + i] * pi[r];
        acc += pdy[r * V + i] * pyy[r * V + i];
      }
      pdx[r * w + V] = -acc * pi[r];
    }
    return {dx};
  });
}

Variable repeat_heads(const Variable& x, int64_t n) {
  const char* op = "repeat_heads";
  SW_CHECK(x.defined(), op, "input is undefined");
  Tensor tx = f32_input(x.data(), op, "input");
  SW_CHECK(tx.ndim() == 4, op, "input must be [B, T, G, D], got ", tx.describe());
  SW_CHECK(n >= 1, op, "copies per group must be >= 1, got ", n, " for input ", tx.describe());
  if (n == 1) return x;
  const int64_t rows = tx.dim(0) * tx.dim(1) * tx.dim(2), D = tx.dim(3);
  Tensor y = Tensor::empty({tx.dim(0), tx.dim(1), tx.dim(2) * n, D});
  const float* px = tx.data<float>();
  float* py = y.data<float>();
#pragma omp parallel for schedule(static) if (rows * n * D > (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) std::memcpy(py + (r * n + j) * D, px + r * D, sizeof(float) * D);
  const Shape xs = tx.shape();
  return record1(op, {x}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dy = g[0].contiguous(), dx = Tensor::empty(xs);
    const float* pdy = dy.data<float>();
    float* pdx = dx.data<float>();
#pragma omp parallel for schedule(static) if (rows * n * D > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
      float* out = pdx + r * D;
      std::memcpy(out, pdy + r * n * D, sizeof(float) * D);
      for (int64_t j = 1; j < n; ++j)
        for (int64_t i = 0; i < D; ++i) out[i] += pdy[(r * n + j) * D + i];
    }
    return {dx};
  });
}

std::vector<Variable> split_last(const Variable& x, const std::vector<int64_t>& sizes) {
  const char* op = "split_last";
  SW_CHECK(x.defined(), op, "input is undefined");
  Tensor tx = f32_input(x.data(), op, "input");
  SW_CHECK(tx.ndim() >= 1 && !sizes.empty(), op, "needs an input with a last dim and at least one piece, got ",
           tx.describe());
  int64_t total = 0;
  for (int64_t s : sizes) {
    SW_CHECK(s > 0, op, "piece sizes must be positive, got ", s, " splitting ", tx.describe());
    total += s;
  }
  const int64_t W = tx.dim(-1), rows = tx.numel() / std::max<int64_t>(W, 1);
  SW_CHECK(total == W, op, "piece sizes sum to ", total, " but the input's last dim is ", W, ": ", tx.describe());
  const float* px = tx.data<float>();
  std::vector<Tensor> outs;
  int64_t off = 0;
  for (int64_t s : sizes) {
    Shape ys = tx.shape();
    ys.back() = s;
    Tensor y = Tensor::empty(ys);
    float* py = y.data<float>();
#pragma omp parallel for schedule(static) if (rows * s > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) std::memcpy(py + r * s, px + r * W + off, sizeof(float) * s);
    outs.push_back(y);
    off += s;
  }
  const Shape xs = tx.shape();
  return record(op, {x}, outs, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(xs);
    float* pdx = dx.data<float>();
    int64_t o = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const int64_t s = sizes[i];
      Tensor gi = g[i].contiguous();
      const float* pg = gi.data<float>();
#pragma omp parallel for schedule(static) if (rows * s > (1 << 16))
      for (int64_t r = 0; r < rows; ++r) std::memcpy(pdx + r * W + o, pg + r * s, sizeof(float) * s);
      o += s;
    }
    return {dx};
  });
}

}  // namespace sw::ops
