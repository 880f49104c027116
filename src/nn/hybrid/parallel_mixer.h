// Intra-layer hybrid (Hymba; Dong et al. 2024, arXiv 2411.13676): several mixers read the same input
// in parallel and their normalised outputs are averaged,
//   y = (1/n) sum_i RMSNorm_i(branch_i(x))
// where the learnable gains of the RMSNorms are Hymba's beta_1, beta_2 (attention heads and SSM
// heads weighted per channel). Hymba fuses the branches' input and output projections into one;
// here each branch keeps its own (the mixers are reused whole from the registry), which adds one
// D x D output projection per branch and leaves the normalise-then-average mixing as in the paper.
// Hymba's meta tokens are the model's (ModelConfig::meta_tokens), kept visible under a sliding
// window by the attention branch's n_sink.
#pragma once

#include <vector>

#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::nn {

// One state per branch (a KV cache beside a recurrent state, typically).
class ParallelState : public LayerState {
 public:
  std::vector<std::unique_ptr<LayerState>> parts;
  int64_t bytes() const override;
  const char* kind() const override { return "parallel"; }
  void add_bytes_by_kind(std::map<std::string, int64_t>& out) const override;
};

class ParallelMixer : public Mixer {
 public:
  ParallelMixer(int64_t d_model, std::vector<std::unique_ptr<Mixer>> branches, double norm_eps);
  Variable forward(const Variable& x, const MixerContext& ctx) override;
  std::unique_ptr<LayerState> new_state(int64_t batch) const override;
  int64_t state_bytes(int64_t context) const override;
  double extra_flops_per_token(int64_t context) const override;
  void add_state_bytes_by_kind(int64_t context, std::map<std::string, int64_t>& out) const override;
  bool causal() const override;
  size_t num_branches() const { return branches_.size(); }
  Mixer& branch(size_t i) { return *branches_[i]; }

 private:
  std::vector<Mixer*> branches_;
  std::vector<RMSNorm*> norms_;
};

}  // namespace sw::nn
