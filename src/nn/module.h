// Module: a named tree of parameters (flashlight/PyTorch style, without the hooks).
//
// Layers register parameters and children in their constructors; visit_parameters() walks the tree
// in registration order with dotted names ("blocks.3.mixer.wq"), which fixes the order of optimizer
// state and checkpoint entries. Each parameter carries whether weight decay applies to it: norms,
// biases and embeddings are excluded by default (AdamW convention).
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace sw::nn {

struct Parameter {
  std::string name;
  Variable var;
  bool decay = true;
  // Read by a GEMM, so to_bf16_weights() may narrow it: every 2-d weight, and stacks of them
  // (grouped expert weights [E, out, in]) that the owning layer marks with mark_gemm_weight().
  bool gemm_weight = false;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  void visit_parameters(const std::function<void(const std::string& name, Parameter& p)>& f,
                        const std::string& prefix = "");
  std::vector<Parameter*> parameters();
  int64_t num_parameters();
  void zero_grad();
  // Converts every GEMM weight (Parameter::gemm_weight) to bf16 in place for inference (halves
  // decode memory traffic); norms, biases, conv taps and other parameters stay f32. Frozen
  // afterwards: bf16 weights cannot be trained.
  void to_bf16_weights();

 protected:
  Variable& add_param(const std::string& name, Tensor init, bool decay = true);
  // Marks the last-added parameter of this name as a GEMM weight whatever its rank.
  void mark_gemm_weight(const std::string& name);
  template <class M>
  M* add_module(const std::string& name, std::unique_ptr<M> m) {
    M* raw = m.get();
    children_.emplace_back(name, std::move(m));
    return raw;
  }

 private:
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// Seeded initialisers (deterministic across runs and machines: mt19937_64 + Box-Muller of our own,
// not std::normal_distribution whose algorithm varies between standard libraries).
Tensor init_normal(const Shape& shape, double std, std::mt19937_64& rng);
Tensor init_uniform(const Shape& shape, double lo, double hi, std::mt19937_64& rng);

}  // namespace sw::nn
