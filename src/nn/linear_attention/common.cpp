#include "nn/linear_attention/common.h"

#include <cmath>

#include "ops/linear_attention_ops.h"
#include "ops/ops.h"

namespace sw::nn {

namespace la_detail {

Variable f32_param(const Variable& p) {
  if (p.data().dtype() == DType::f32) return p;
  return Variable(p.data().to(DType::f32));
}

Variable tanh(const Variable& x) { return ops::add_scalar(ops::scale(ops::sigmoid(ops::scale(x, 2.0)), 2.0), -1.0); }

Variable logsigmoid(const Variable& x) { return ops::scale(ops::softplus(ops::scale(x, -1.0)), -1.0); }

Variable elu_plus_one(const Variable& x) {
  return ops::add(ops::relu(x), ops::exp(ops::scale(ops::relu(ops::scale(x, -1.0)), -1.0)));
}

Variable clamp_min(const Variable& x, double lo) { return ops::add_scalar(ops::relu(ops::add_scalar(x, -lo)), lo); }


Variable recurrence(const Variable& q, const Variable& k, const Variable& v, kernels::GlaGate gate, const Variable* g,
                    const Variable* u, LinearAttentionState* state, double scale, int64_t chunk_size) {
  const int64_t T = q.dim(1);
  if (state && T == 1 && !grad_enabled()) {
    Tensor tg = g ? g->data() : Tensor(), tu = u ? u->data() : Tensor();
    return Variable(ops::gated_linear_attention_step(q.data(), k.data(), v.data(), gate, g ? &tg : nullptr,
                                                     u ? &tu : nullptr, state->memory, scale));
  }
  Variable h0 = state ? Variable(state->memory) : Variable();
  ops::GlaOutput r = ops::gated_linear_attention(q, k, v, gate, g, u, state ? &h0 : nullptr, scale, chunk_size);
  if (state) state->memory = r.state.data();  // a fresh tensor: h0, which the op may have saved, stays intact
  return r.o;
}

int64_t expanded_width(int64_t d_model, double expand, int64_t heads, const char* layer, const char* what) {
  SW_CHECK(heads > 0, layer, "n_heads must be positive, got ", heads);
  const double w = static_cast<double>(d_model) * expand;
  const int64_t r = static_cast<int64_t>(std::llround(w));
  SW_CHECK(r > 0 && std::fabs(w - static_cast<double>(r)) < 1e-6, layer, what, " = d_model ", d_model, " x ", expand,
           " must be a positive integer");
  SW_CHECK(r % heads == 0, layer, what, " ", r, " must be a multiple of n_heads ", heads);
  return r;
}

}  // namespace la_detail
}  // namespace sw::nn
