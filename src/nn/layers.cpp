#include "nn/layers.h"

#include "ops/ops.h"

namespace sw::nn {

double Ffn::gemm_weights_per_token() {
  double w = 0;
  visit_parameters([&](const std::string&, Parameter& p) {
    if (p.gemm_weight) w += static_cast<double>(p.var.numel());
  });
  return w;
}

void Ffn::capture_input(const Variable& x) {
  if (!capture_) return;
  const int64_t D = x.dim(x.data().ndim() - 1);
  capture_->push_back(x.data().to(DType::f32).contiguous().reshape({x.numel() / D, D}));
}

double Ffn::last_weight_bytes() {
  double bytes = 0;
  visit_parameters([&](const std::string&, Parameter& p) { bytes += static_cast<double>(p.var.data().nbytes()); });
  return bytes;
}

namespace {
thread_local DType t_matmul_dtype = DType::f32;
}

DType matmul_dtype() { return t_matmul_dtype; }
void set_matmul_dtype(DType t) {
  SW_CHECK(t == DType::f32 || t == DType::bf16, "matmul_dtype", "must be f32 or bf16, got ", dtype_name(t));
  t_matmul_dtype = t;
}

Linear::Linear(int64_t in, int64_t out, bool bias, double std, std::mt19937_64& rng) : in_(in), out_(out) {
  w_ = &add_param("weight", init_normal({out, in}, std, rng));
  if (bias) b_ = &add_param("bias", Tensor::zeros({out}), false);
}

Variable Linear::forward(const Variable& x) { return ops::linear(x, *w_, b_, t_matmul_dtype); }

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) { w_ = &add_param("weight", Tensor::full({dim}, 1.0), false); }

Variable RMSNorm::forward(const Variable& x) { return ops::rmsnorm(x, w_, eps_); }

Embedding::Embedding(int64_t vocab, int64_t dim, double std, std::mt19937_64& rng) {
  table_ = &add_param("weight", init_normal({vocab, dim}, std, rng), false);
}

Variable Embedding::forward(const Tensor& ids) { return ops::embedding(*table_, ids); }

SwiGluMlp::SwiGluMlp(int64_t dim, int64_t hidden, double std, double out_std, std::mt19937_64& rng) {
  gate_ = add_module("gate", std::make_unique<Linear>(dim, hidden, false, std, rng));
  up_ = add_module("up", std::make_unique<Linear>(dim, hidden, false, std, rng));
  down_ = add_module("down", std::make_unique<Linear>(hidden, dim, false, out_std, rng));
}

Variable SwiGluMlp::forward(const Variable& x) {
  capture_input(x);
  return down_->forward(ops::swiglu(gate_->forward(x), up_->forward(x)));
}

GeluMlp::GeluMlp(int64_t dim, int64_t hidden, double std, double out_std, std::mt19937_64& rng) {
  up_ = add_module("up", std::make_unique<Linear>(dim, hidden, false, std, rng));
  down_ = add_module("down", std::make_unique<Linear>(hidden, dim, false, out_std, rng));
}

Variable GeluMlp::forward(const Variable& x) { return down_->forward(ops::gelu(up_->forward(x))); }

}  // namespace sw::nn
