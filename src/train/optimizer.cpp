#include "train/optimizer.h"

#include <cmath>

namespace sw::train {

Optimizer::Optimizer(nn::Module& model, const OptimizerConfig& cfg) : cfg_(cfg) {
  SW_CHECK(cfg.type == "adamw" || cfg.type == "sgd", "optimizer", "type must be adamw or sgd, got '", cfg.type, "'");
  model.visit_parameters([&](const std::string& name, nn::Parameter& p) {
    if (!p.var.requires_grad()) return;
    bool is_embedding = name.rfind("embed.", 0) == 0;
    bool decay = p.decay || (is_embedding && cfg.decay_embeddings);
    Slot s{&p, decay, Tensor::zeros(p.var.shape()), cfg.type == "adamw" ? Tensor::zeros(p.var.shape()) : Tensor()};
    slots_.push_back(s);
    names_.push_back(name);
  });
}

double clip_grad_norm(const std::vector<nn::Parameter*>& params, double max_norm) {
  double ss = 0;
  for (nn::Parameter* p : params) {
    const Tensor& g = p->var.grad();
    if (!g.defined()) continue;
    const float* pg = g.data<float>();
    int64_t n = g.numel();
    double local = 0;
#pragma omp parallel for reduction(+ : local) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) local += static_cast<double>(pg[i]) * pg[i];
    ss += local;
  }
  double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    float s = static_cast<float>(max_norm / (norm + 1e-12));
    for (nn::Parameter* p : params) {
      Tensor& g = p->var.mutable_grad();
      if (!g.defined()) continue;
      float* pg = g.data<float>();
      for (int64_t i = 0; i < g.numel(); ++i) pg[i] *= s;
    }
  }
  return norm;
}

void Optimizer::step(double lr) {
  std::vector<nn::Parameter*> params;
  for (Slot& s : slots_) params.push_back(s.p);
  last_norm_ = clip_grad_norm(params, cfg_.grad_clip);
  ++steps_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(steps_));
  for (Slot& s : slots_) {
    const Tensor& g = s.p->var.grad();
    if (!g.defined()) continue;  // a parameter unused this step (e.g. an expert no token chose)
    Tensor& w = s.p->var.mutable_data();
    float* pw = w.data<float>();
    const float* pg = g.data<float>();
    float* pm = s.m.data<float>();
    int64_t n = w.numel();
    if (cfg_.type == "adamw") {
      float* pv = s.v.data<float>();
      const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
      const float step = static_cast<float>(lr / bc1), rbc2 = static_cast<float>(1.0 / std::sqrt(bc2));
      const float eps = static_cast<float>(cfg_.eps);
      const float decay = s.decay ? static_cast<float>(1.0 - lr * cfg_.weight_decay) : 1.f;
#pragma omp parallel for simd if (n > (1 << 15))
      for (int64_t i = 0; i < n; ++i) {
        pm[i] = b1 * pm[i] + (1.f - b1) * pg[i];
        pv[i] = b2 * pv[i] + (1.f - b2) * pg[i] * pg[i];
        pw[i] = pw[i] * decay - step * pm[i] / (std::sqrt(pv[i]) * rbc2 + eps);
      }
    } else {
      const float mu = static_cast<float>(cfg_.momentum), flr = static_cast<float>(lr);
      const float decay = s.decay ? static_cast<float>(1.0 - lr * cfg_.weight_decay) : 1.f;
#pragma omp parallel for simd if (n > (1 << 15))
      for (int64_t i = 0; i < n; ++i) {
        pm[i] = mu * pm[i] + pg[i];
        pw[i] = pw[i] * decay - flr * pm[i];
      }
    }
  }
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    out.emplace_back("opt.m." + names_[i], slots_[i].m);
    if (slots_[i].v.defined()) out.emplace_back("opt.v." + names_[i], slots_[i].v);
  }
  return out;
}

void Optimizer::load_state(const std::vector<std::pair<std::string, Tensor>>& named, int64_t steps) {
  auto find = [&](const std::string& key) -> const Tensor* {
    for (const auto& [k, t] : named)
      if (k == key) return &t;
    return nullptr;
  };
  for (size_t i = 0; i < slots_.size(); ++i) {
    for (const char* kind : {"m", "v"}) {
      Tensor& dst = kind[0] == 'm' ? slots_[i].m : slots_[i].v;
      if (!dst.defined()) continue;
      std::string key = std::string("opt.") + kind + "." + names_[i];
      const Tensor* t = find(key);
      SW_CHECK(t != nullptr, "optimizer", "checkpoint has no state '", key, "'");
      SW_CHECK(t->shape() == dst.shape() && t->dtype() == DType::f32, "optimizer", "state '", key, "' is ",
               t->describe(), ", expected f32", shape_str(dst.shape()));
      dst.copy_from(*t);
    }
  }
  steps_ = steps;
}

std::string first_nonfinite_grad(nn::Module& model) {
  std::string found;
  model.visit_parameters([&](const std::string& name, nn::Parameter& p) {
    if (!found.empty() || !p.var.grad().defined()) return;
    const float* g = p.var.grad().data<float>();
    for (int64_t i = 0; i < p.var.grad().numel(); ++i)
      if (!std::isfinite(g[i])) {
        found = name + "[" + std::to_string(i) + "] = " + std::to_string(g[i]);
        return;
      }
  });
  return found;
}

}  // namespace sw::train
