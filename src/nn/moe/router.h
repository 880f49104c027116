// MoE routing decisions (survey section 5.1): which experts each token goes to. Pure functions over
// the router's scores, so the tests can drive them with crafted scores. The gate values are not
// made here: they come from the scores (ops::moe_gather_gates), which is where the gradient flows.
//
// Ties are broken by the lower index (expert for token choice, token for expert choice), so a
// routing is a deterministic function of the scores.
#pragma once

#include <cstdint>
#include <vector>

namespace sw::nn {

struct Routing {
  int64_t n_tokens = 0, n_experts = 0;
  int64_t slots = 0;                // per token: top_k, or n_experts for expert choice
  std::vector<int32_t> selected;    // [N, slots]: the chosen expert, or -1 (expert choice: not chosen)
  std::vector<int32_t> dispatched;  // [N, slots]: selected with capacity-dropped slots set to -1
  std::vector<int64_t> counts;      // [E]: selections per expert, before drops (the load)
  int64_t dropped = 0;              // selections dropped by the capacity limit
};

// Token choice: each token takes its top-k experts by score + bias (bias: the selection-only
// balancing bias of DeepSeek-V3, [E], or null). With n_groups > 1 (DeepSeek-V3 group-limited
// routing) the E experts form n_groups equal groups, each token first keeps its topk_groups best
// groups (group score: the sum of its two best biased scores when a bias is given, its best score
// otherwise, as DeepSeek-V3's Gate does) and picks its top-k among their experts only.
//   scores [N, E]
Routing route_top_k(const float* scores, const float* bias, int64_t N, int64_t E, int64_t k, int64_t n_groups = 1,
                    int64_t topk_groups = 1);

// Expert choice (Zhou et al. 2022): each expert takes its top-`capacity` tokens by score, so no
// expert ever exceeds capacity; a token may get any number of experts, zero included.
//   scores [N, E]
Routing route_expert_choice(const float* scores, int64_t N, int64_t E, int64_t capacity);

// Capacity limit for token choice: in token order (then slot order), an expert takes at most
// `capacity` selections; later ones are dropped (dispatched = -1) and counted.
void apply_capacity(Routing& r, int64_t capacity);

// ceil(capacity_factor * N * k / E), at least 1.
int64_t expert_capacity(double capacity_factor, int64_t N, int64_t k, int64_t E);

}  // namespace sw::nn
