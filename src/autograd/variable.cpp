#include "autograd/variable.h"

#include <unordered_set>

namespace sw {
namespace {
thread_local bool t_grad_enabled = true;
}

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

Variable::Variable(Tensor data, bool requires_grad, std::string name) : impl_(std::make_shared<VariableImpl>()) {
  impl_->data = std::move(data);
  impl_->requires_grad = requires_grad;
  impl_->name = std::move(name);
}

bool any_requires_grad(const std::vector<Variable>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Variable& v : inputs)
    if (v.defined() && v.requires_grad()) return true;
  return false;
}

std::vector<Variable> record(const char* name, const std::vector<Variable>& inputs, std::vector<Tensor> outputs,
                             BackwardFn backward) {
  std::vector<Variable> out;
  out.reserve(outputs.size());
  bool track = any_requires_grad(inputs);
  std::shared_ptr<Node> node;
  if (track) {
    node = std::make_shared<Node>();
    node->name = name;
    node->backward = std::move(backward);
    for (const Variable& v : inputs) {
      Edge e;
      if (v.defined() && v.requires_grad()) {
        if (v.impl()->grad_fn) {
          e.node = v.impl()->grad_fn;
          e.index = v.impl()->output_index;
        } else {
          e.leaf = v.impl();
        }
      }
      node->inputs.push_back(e);
    }
    for (const Tensor& t : outputs) node->output_shapes.push_back(t.shape());
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    Variable v(std::move(outputs[i]));
    if (node) {
      v.impl_->grad_fn = node;
      v.impl_->output_index = static_cast<int>(i);
    }
    out.push_back(std::move(v));
  }
  return out;
}

Variable record1(const char* name, const std::vector<Variable>& inputs, Tensor output, BackwardFn backward) {
  std::vector<Tensor> outs;
  outs.push_back(std::move(output));
  return record(name, inputs, std::move(outs), std::move(backward))[0];
}

void accumulate_grad(Tensor& dst, const Tensor& src) {
  if (!dst.defined()) {
    dst = src.is_contiguous() && src.dtype() == DType::f32 ? src : src.contiguous().to(DType::f32);
    return;
  }
  SW_CHECK(dst.shape() == src.shape(), "backward", "gradient of shape ", shape_str(src.shape()),
           " does not match ", shape_str(dst.shape()));
  Tensor s = src.contiguous().to(DType::f32);
  if (dst.storage() == s.storage()) {  // never add a buffer into itself
    dst = dst.clone();
  } else if (dst.storage().use_count() > 1) {
    dst = dst.clone();  // shared with someone else: do not modify their tensor
  }
  float* d = dst.data<float>();
  const float* p = s.data<float>();
  int64_t n = dst.numel();
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) d[i] += p[i];
}

void Variable::backward() const {
  SW_CHECK(numel() == 1, "backward", "without a seed needs a one-element output, got shape ", shape_str(shape()));
  backward(Tensor::full(shape(), 1.0));
}

void Variable::backward(const Tensor& seed) const {
  SW_CHECK(seed.shape() == shape(), "backward", "seed shape ", shape_str(seed.shape()), " vs output ",
           shape_str(shape()));
  if (!impl_->grad_fn) {
    if (impl_->requires_grad) accumulate_grad(impl_->grad, seed);
    return;
  }
  // Topological order by iterative depth-first search from the root.
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack{{impl_->grad_fn.get(), 0}};
  seen.insert(impl_->grad_fn.get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      Node* child = node->inputs[next++].node.get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  Node* root = impl_->grad_fn.get();
  SW_CHECK(root->backward != nullptr, "backward", "the graph behind this variable was already run backward");
  root->grads.resize(root->output_shapes.size());
  accumulate_grad(root->grads[impl_->output_index], seed);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    SW_CHECK(node->backward != nullptr, "backward", "node ", node->name, " was already run backward");
    node->grads.resize(node->output_shapes.size());
    for (size_t i = 0; i < node->grads.size(); ++i)
      if (!node->grads[i].defined()) node->grads[i] = Tensor::zeros(node->output_shapes[i]);
    std::vector<Tensor> in_grads = node->backward(node->grads);
    SW_ASSERT(in_grads.size() == node->inputs.size());
    for (size_t i = 0; i < in_grads.size(); ++i) {
      const Edge& e = node->inputs[i];
      if (!e.live() || !in_grads[i].defined()) continue;
      if (e.node) {
        e.node->grads.resize(e.node->output_shapes.size());
        accumulate_grad(e.node->grads[e.index], in_grads[i]);
      } else {
        accumulate_grad(e.leaf->grad, in_grads[i]);
      }
    }
    // Free what this node saved and the gradients it consumed.
    node->backward = nullptr;
    node->grads.clear();
  }
}

}  // namespace sw
