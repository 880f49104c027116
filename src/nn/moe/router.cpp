#include "nn/moe/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace sw::nn {
namespace {

// Indices of the k largest v[0..n) (ties: lower index first), written to out[0..k) best first.
void top_k_indices(const float* v, int64_t n, int64_t k, int32_t* out, std::vector<int32_t>& scratch) {
  scratch.resize(n);
  std::iota(scratch.begin(), scratch.end(), 0);
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(),
                    [v](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(scratch.begin(), scratch.begin() + k, out);
}

void count_selections(Routing& r) {
  r.counts.assign(r.n_experts, 0);
  for (int32_t e : r.selected)
    if (e >= 0) ++r.counts[e];
  r.dispatched = r.selected;
  r.dropped = 0;
}

}  // namespace

Routing route_top_k(const float* scores, const float* bias, int64_t N, int64_t E, int64_t k, int64_t n_groups,
                    int64_t topk_groups) {
  Routing r;
  r.n_tokens = N, r.n_experts = E, r.slots = k;
  r.selected.resize(N * k);
  const int64_t per_group = E / n_groups;
#pragma omp parallel if (N * E > (1 << 15))
  {
    std::vector<float> biased(E), group_score(n_groups);
    std::vector<int32_t> scratch, groups(topk_groups);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t e = 0; e < E; ++e) biased[e] = scores[n * E + e] + (bias ? bias[e] : 0.f);
      if (n_groups > 1) {
        for (int64_t g = 0; g < n_groups; ++g) {
          const float* s = biased.data() + g * per_group;
          float best = -std::numeric_limits<float>::infinity(), second = best;
          for (int64_t i = 0; i < per_group; ++i) {
            if (s[i] > best) second = best, best = s[i];
            else if (s[i] > second) second = s[i];
          }
          group_score[g] = (bias && per_group >= 2) ? best + second : best;
        }
        top_k_indices(group_score.data(), n_groups, topk_groups, groups.data(), scratch);
        std::vector<bool> keep(n_groups, false);
        for (int32_t g : groups) keep[g] = true;
        for (int64_t e = 0; e < E; ++e)
          if (!keep[e / per_group]) biased[e] = -std::numeric_limits<float>::infinity();
      }
      top_k_indices(biased.data(), E, k, r.selected.data() + n * k, scratch);
    }
  }
  count_selections(r);
  return r;
}

Routing route_expert_choice(const float* scores, int64_t N, int64_t E, int64_t capacity) {
  Routing r;
  r.n_tokens = N, r.n_experts = E, r.slots = E;
  r.selected.assign(N * E, -1);
  const int64_t c = std::min(capacity, N);
#pragma omp parallel if (N * E > (1 << 15))
  {
    std::vector<float> column(N);
    std::vector<int32_t> scratch, chosen(c);
#pragma omp for schedule(static)
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t n = 0; n < N; ++n) column[n] = scores[n * E + e];
      top_k_indices(column.data(), N, c, chosen.data(), scratch);
      for (int32_t n : chosen) r.selected[n * E + e] = static_cast<int32_t>(e);  // slot e of token n
    }
  }
  count_selections(r);
  return r;
}

void apply_capacity(Routing& r, int64_t capacity) {
  std::vector<int64_t> taken(r.n_experts, 0);
  for (size_t a = 0; a < r.dispatched.size(); ++a) {
    const int32_t e = r.dispatched[a];
    if (e < 0) continue;
    if (taken[e] < capacity) {
      ++taken[e];
    } else {
      r.dispatched[a] = -1;
      ++r.dropped;
    }
  }
}

int64_t expert_capacity(double capacity_factor, int64_t N, int64_t k, int64_t E) {
  const double c = std::ceil(capacity_factor * static_cast<double>(N) * static_cast<double>(k) / static_cast<double>(E));
  return std::max<int64_t>(1, static_cast<int64_t>(c));
}

}  // namespace sw::nn
