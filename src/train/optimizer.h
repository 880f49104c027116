// Optimizers over a model's parameters: AdamW (decoupled weight decay, Loshchilov & Hutter) and SGD
// with momentum, plus clipping by global gradient norm. State tensors are named after their
// parameters so checkpoints can save and restore them exactly.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace sw::train {

struct OptimizerConfig {
  std::string type = "adamw";  // adamw | sgd
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // applied to parameters with decay = true (not norms/biases/embeddings)
  bool decay_embeddings = false;
  double momentum = 0.9;  // sgd
  double grad_clip = 1.0;  // global-norm clip; 0 = off

  template <class V>
  void visit(V& v) {
    v("type", type, "adamw or sgd");
    v("beta1", beta1, "AdamW first-moment decay");
    v("beta2", beta2, "AdamW second-moment decay");
    v("eps", eps, "AdamW epsilon");
    v("weight_decay", weight_decay, "decoupled weight decay");
    v("decay_embeddings", decay_embeddings, "also decay embeddings");
    v("momentum", momentum, "SGD momentum");
    v("grad_clip", grad_clip, "clip gradients to this global norm (0 = off)");
  }
};

class Optimizer {
 public:
  Optimizer(nn::Module& model, const OptimizerConfig& cfg);
  // One update with learning rate lr from the parameters' current gradients.
  void step(double lr);
  int64_t steps() const { return steps_; }
  // Global L2 norm of all gradients (before clipping) of the last step.
  double last_grad_norm() const { return last_norm_; }
  // Named state tensors for checkpoints ("adamw.m.<param>", ...) and the step count.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& named, int64_t steps);

 private:
  struct Slot {
    nn::Parameter* p;
    bool decay;
    Tensor m, v;  // AdamW moments, or SGD momentum buffer in m
  };
  OptimizerConfig cfg_;
  std::vector<Slot> slots_;
  std::vector<std::string> names_;
  int64_t steps_ = 0;
  double last_norm_ = 0;
};

// Scales gradients in place so their global L2 norm is at most max_norm; returns the norm before.
double clip_grad_norm(const std::vector<nn::Parameter*>& params, double max_norm);

// The name and element index of the first non-finite gradient, or "" when all are finite.
std::string first_nonfinite_grad(nn::Module& model);

}  // namespace sw::train
