// Expert merging (survey section 5, MoE compression; after M-SMoE, Li et al. 2023, arXiv 2310.01334):
// each MoE FFN's E SwiGLU experts become M < E experts. Experts are grouped around M dominant ones,
// each group's weights averaged by how much the router used its members, and each merged expert keeps
// its dominant expert's router row, so the router still recognises the tokens it sent there.
//
// Grouping, per MoE FFN, on the router rows r_e (what the router "looks for" in a token):
//   dominants: the most used expert first, then repeatedly the expert least similar (lowest
//   maximum cosine similarity of r_e) to the dominants chosen so far (farthest-point selection);
//   every other expert joins the dominant of highest cosine similarity (ties: lower index).
// Merged weights: W_g = sum_{e in g} u_e W_e / sum_{e in g} u_e over gate, up and down, u_e the
// expert's load (the checkpoint's last per-expert load; uniform when there is none or a group's is 0).
// Merged experts are ordered by the lowest original index of their group. Parameter-free MoE++
// experts, shared experts and the selection bias of the dominants are kept; top_k becomes
// min(top_k, the routed experts left).
//
// When all experts of a layer are equal (a freshly upcycled model) and the top-k gates are
// renormalised, the merged model computes the same function (tests/train/convert_test.cpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/language_model.h"

namespace sw::train {

struct ExpertGroups {
  std::vector<int64_t> dominant;                 // [M] original expert index, in merged order
  std::vector<std::vector<int64_t>> members;     // [M] original experts of each merged expert
};

// The grouping above over router rows [E, D] (row-major) and loads [E] (empty: uniform).
ExpertGroups group_experts(const std::vector<float>& router_rows, int64_t E, int64_t D,
                           const std::vector<double>& loads, int64_t M);

// The merged model. loads[i]: per-expert load of the i-th block position with a routed FFN (the
// checkpoint's TrainState::expert_load; may be empty). M in 1..E-1 of every MoE FFN.
std::unique_ptr<models::LanguageModel> merge_experts(models::LanguageModel& moe, int64_t M,
                                                     const std::vector<std::vector<double>>& loads,
                                                     const std::string& where);

}  // namespace sw::train
