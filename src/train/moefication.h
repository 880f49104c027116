// MoEfication (Zhang et al. 2022, arXiv 2110.01786): a trained dense FFN already behaves like a
// sparse mixture, since for one token only some hidden neurons matter. Each SwiGLU FFN's H hidden
// neurons are split into E experts of H / E neurons, grouping neurons that are active on the same
// tokens (balanced clustering of their co-activation over calibration tokens), and a router is fitted
// that predicts from the FFN input how much each expert contributes. The experts are summed with
// unit gates (MoeConfig::unit_gates), so top_k = E computes the dense FFN exactly and top_k < E
// skips the experts the router expects to matter least.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/language_model.h"

namespace sw::train {

struct MoeficationOptions {
  int64_t n_experts = 8;
  int64_t top_k = 4;
  int64_t iterations = 20;  // balanced k-means rounds (stops early when no neuron moves)
  double ridge = 1e-3;      // router least squares: ridge * mean(diag(X^T X)) added to the diagonal
  uint64_t seed = 1;        // k-means initialisation
};

// Balanced clustering of the H neurons by co-activation: neuron i's profile is |activation[:, i]|
// over the N calibration tokens, L2-normalised, so profile_i . profile_j is their normalised
// co-activation. k-means on profiles (cosine similarity) where every cluster holds exactly H / E
// neurons: each round assigns the (neuron, cluster) pairs greedily from the most similar down.
//   activation [N, H] f32; returns group[i] in [0, E), each group H / E neurons (H % E == 0).
std::vector<int32_t> cluster_coactivation(const Tensor& activation, int64_t E, int64_t iterations, uint64_t seed);

// Router weights W [E, D] minimising sum_n ||W x_n - t_n||^2 + lambda ||W||^2, where t_n[e] is
// expert e's activation mass sum_{i in e} |activation[n, i]| and lambda = ridge * mean(diag(X^T X)).
// Solved in f64 (normal equations, Cholesky).
//   x [N, D] f32, activation [N, H] f32, group [H]; returns [E, D] f32.
Tensor fit_router(const Tensor& x, const Tensor& activation, const std::vector<int32_t>& group, int64_t E,
                  double ridge);

// Per converted FFN: how much activation mass the router's top-k keeps on the calibration tokens,
// against the best possible top-k (an oracle that knows the activations).
struct MoeficationLayer {
  std::string name;  // parameter prefix, e.g. "blocks.3.ffn"
  int64_t tokens = 0;
  double router_mass = 0, oracle_mass = 0;  // fractions of the total |activation| mass
};

// Converts every SwiGLU FFN of `dense` (calibrated on ids i32 [B, T], run in rows of at most
// 16 sequences). Errors name `where`: no SwiGLU FFN, hidden width not a multiple of n_experts,
// top_k outside 1..n_experts.
std::unique_ptr<models::LanguageModel> moefy(models::LanguageModel& dense, const Tensor& calibration_ids,
                                             const MoeficationOptions& o, const std::string& where,
                                             std::vector<MoeficationLayer>* report = nullptr);

}  // namespace sw::train
