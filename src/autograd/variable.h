// Reverse-mode autograd: an eager tape (define by run).
//
// A Variable is a Tensor plus, when it was produced by a recorded op, the Node that made it. An op
// computes its outputs with kernels, then calls record() with a backward closure that captures only
// the tensors its backward needs. Variable::backward() runs the closures in reverse topological
// order and frees each closure (and so the activations it saved) as soon as it has run; the graph
// can be run backward once. Gradients of leaves accumulate (+=) across backward calls until
// zero_grad(), which is how gradient accumulation over micro-batches works.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sw {

struct Node;

struct VariableImpl {
  Tensor data;
  Tensor grad;  // undefined until a gradient arrives (leaves only)
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  int output_index = 0;
  std::string name;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false, std::string name = "");

  bool defined() const { return impl_ != nullptr && impl_->data.defined(); }
  const Tensor& data() const { return impl_->data; }
  Tensor& mutable_data() { return impl_->data; }
  const Tensor& grad() const { return impl_->grad; }
  Tensor& mutable_grad() { return impl_->grad; }
  bool requires_grad() const { return impl_ && (impl_->requires_grad || impl_->grad_fn); }
  bool is_leaf() const { return !impl_->grad_fn; }
  const std::string& name() const { return impl_->name; }
  void set_name(std::string n) { impl_->name = std::move(n); }
  void set_requires_grad(bool r) { impl_->requires_grad = r; }

  const Shape& shape() const { return impl_->data.shape(); }
  int64_t dim(int64_t i) const { return impl_->data.dim(i); }
  int64_t numel() const { return impl_->data.numel(); }
  double item() const { return impl_->data.item(); }

  // Backpropagates from this variable. Without a seed it must hold one element (a loss): seed 1.
  void backward() const;
  void backward(const Tensor& seed) const;
  void zero_grad() { impl_->grad = Tensor(); }
  Variable detach() const { return Variable(impl_->data, false); }

  const std::shared_ptr<VariableImpl>& impl() const { return impl_; }

 private:
  std::shared_ptr<VariableImpl> impl_;
  friend std::vector<Variable> record(const char*, const std::vector<Variable>&, std::vector<Tensor>,
                                      std::function<std::vector<Tensor>(const std::vector<Tensor>&)>);
};

// Where the gradient of one op input goes: to the node that produced it, or to a leaf.
struct Edge {
  std::shared_ptr<Node> node;
  int index = 0;
  std::shared_ptr<VariableImpl> leaf;
  bool live() const { return node || leaf; }
};

using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct Node {
  const char* name = "";
  std::vector<Edge> inputs;
  std::vector<Shape> output_shapes;
  BackwardFn backward;  // returns one gradient per input (undefined where the input needs none)
  std::vector<Tensor> grads;  // accumulated gradient of each output during backward
};

// Is gradient recording on for this thread? Off inside a NoGradGuard (inference, optimizer steps).
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when recording is on and any input needs a gradient: ops skip saving tensors otherwise.
bool any_requires_grad(const std::vector<Variable>& inputs);

// Wraps op outputs as Variables; when any input needs a gradient, attaches a Node running `backward`.
std::vector<Variable> record(const char* name, const std::vector<Variable>& inputs, std::vector<Tensor> outputs,
                             BackwardFn backward);
Variable record1(const char* name, const std::vector<Variable>& inputs, Tensor output, BackwardFn backward);

// In-place dst += src (same shape, f32); defines dst as a copy when undefined.
void accumulate_grad(Tensor& dst, const Tensor& src);

}  // namespace sw
