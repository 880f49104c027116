#include "nn/module.h"

#include <cmath>

namespace sw::nn {

void Module::visit_parameters(const std::function<void(const std::string&, Parameter&)>& f, const std::string& prefix) {
  for (auto& p : params_) f(prefix + p->name, *p);
  for (auto& [name, child] : children_) child->visit_parameters(f, prefix + name + ".");
}

std::vector<Parameter*> Module::parameters() {
  std::vector<Parameter*> out;
  visit_parameters([&](const std::string&, Parameter& p) { out.push_back(&p); });
  return out;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  visit_parameters([&](const std::string&, Parameter& p) { n += p.var.numel(); });
  return n;
}

void Module::zero_grad() {
  visit_parameters([](const std::string&, Parameter& p) { p.var.zero_grad(); });
}

void Module::to_bf16_weights() {
  visit_parameters([](const std::string&, Parameter& p) {
    if (p.gemm_weight && p.var.data().dtype() == DType::f32) {
      p.var.mutable_data() = p.var.data().to(DType::bf16);
      p.var.set_requires_grad(false);
    }
  });
}

Variable& Module::add_param(const std::string& name, Tensor init, bool decay) {
  auto p = std::make_unique<Parameter>();
  p->name = name;
  p->var = Variable(std::move(init), true, name);
  p->decay = decay;
  p->gemm_weight = p->var.data().ndim() == 2;
  params_.push_back(std::move(p));
  return params_.back()->var;
}

void Module::mark_gemm_weight(const std::string& name) {
  for (auto it = params_.rbegin(); it != params_.rend(); ++it)
    if ((*it)->name == name) {
      (*it)->gemm_weight = true;
      return;
    }
  SW_CHECK(false, "module", "mark_gemm_weight: no parameter named '", name, "'");
}

Tensor init_normal(const Shape& shape, double std, std::mt19937_64& rng) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data<float>();
  int64_t n = t.numel();
  auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
  for (int64_t i = 0; i < n; i += 2) {
    double r = std::sqrt(-2.0 * std::log(uniform())), a = 2.0 * M_PI * uniform();
    p[i] = static_cast<float>(std * r * std::cos(a));
    if (i + 1 < n) p[i + 1] = static_cast<float>(std * r * std::sin(a));
  }
  return t;
}

Tensor init_uniform(const Shape& shape, double lo, double hi, std::mt19937_64& rng) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(lo + (hi - lo) * (static_cast<double>(rng() >> 11) * 0x1.0p-53));
  return t;
}

}  // namespace sw::nn
