// Masked diffusion language modelling (LLaDA, Nie et al. 2025, arXiv 2502.09992; docs/research/
// methods.md 5.2): the forward process, the training loss and the Monte-Carlo likelihood bound.
//
// Forward process: per sequence u ~ U[0, 1), mask probability p = (1 - eps) u + eps (eps = 1e-3, so
// p ~ U[eps, 1)); every token independently becomes the model's [MASK] id with probability p. The
// model (bidirectional) predicts the clean token at each masked position itself: no next-token shift.
//
// Loss (LLaDA's pre-training loss, GUIDELINES.md of ML-GSAI/LLaDA):
//   pretraining: sum over masked positions of CE / p_b, divided by B * T (every token of the batch,
//                masked or not);
//   SFT:         positions before a row's prompt length are never masked (they are drawn and then
//                restored, as the reference does), and each row's sum of CE / p_b is divided by its
//                answer length T - prompt_b and then by B.
// Its expectation over u and the masks is the negative ELBO (an upper bound on -log p(x)) per token.
//
// Randomness: the draw of row r of micro-batch m at optimizer step s comes from its own generator
// seeded by diffusion_row_seed(seed, s, m, r): nothing is carried between steps, so a resumed run
// draws exactly the masks of an uninterrupted one, and rows are independent of each other and of
// the batch size.
//
// Evaluation (LLaDA's get_log_likelihood, Eq. 6 of the paper): for a row with L scored tokens, draw
// l ~ U{1..L}, mask exactly l scored positions uniformly at random, and take (L / l) * sum of their
// CE; the mean over draws estimates the same bound as the training loss (integrating the Bernoulli
// masks over t gives weight 1 / (l C(L, l)) to every mask set of size l in both), with less variance.
// The n_mc draws of a row are stratified: l_k = 1 + floor((v + k) / n_mc * L), v ~ U[0, 1) per row.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "models/language_model.h"

namespace sw::train {

constexpr double kDiffusionEps = 1e-3;

// One draw of the forward process for a batch of clean ids [B, T].
struct DiffusionDraw {
  Tensor noisy;           // i32 [B, T]: the clean ids with masked positions set to the mask id
  Tensor targets;         // i32 [B, T]: the clean id at masked positions, -1 elsewhere
  std::vector<double> p;  // per row: the mask probability p_b
};

struct DiffusionLossOptions {
  double eps = kDiffusionEps;
  // SFT: per row, positions [0, prompt_lengths[b]) are never masked and the row is normalised by
  // its answer length. Empty: pretraining (every position may be masked, normalised by B * T).
  std::vector<int64_t> prompt_lengths;
};

// The seed of one row's generator: splitmix64 over (seed, step, micro, row).
uint64_t diffusion_row_seed(uint64_t seed, int64_t step, int64_t micro, int64_t row);

// Draws p and the masks of every row of `clean` (i32 [B, T], ids in [0, vocab) and never mask_id;
// sw::Error naming the row and position otherwise).
DiffusionDraw draw_forward_process(const Tensor& clean, int32_t mask_id, uint64_t seed, int64_t step, int64_t micro,
                                   const DiffusionLossOptions& o = {});
// A draw from given masks (1 = masked, row-major [B, T]) and per-row p (tests, fixed masks).
DiffusionDraw make_diffusion_draw(const Tensor& clean, const std::vector<uint8_t>& masked, std::vector<double> p,
                                  int32_t mask_id);

// sum_b w_b * sum_{t: targets[b, t] >= 0} CE(model(noisy)[b, t], targets[b, t]), through the fused
// chunked LM head on the masked rows only; plus the model's auxiliary losses (MoE balancing). A batch
// with nothing masked gives 0 (with a zero gradient).
Variable weighted_masked_cross_entropy(models::LanguageModel& model, const Tensor& noisy, const Tensor& targets,
                                       const std::vector<double>& row_weight);

// The masked-diffusion training loss of one draw (normalisation above).
Variable masked_diffusion_loss(models::LanguageModel& model, const DiffusionDraw& d, const DiffusionLossOptions& o = {});

// The Monte-Carlo likelihood bound of a batch: `clean` i32 [B, T] holds the context of every
// position; positions with scored[b, t] false are context only (never masked, not counted). Returns
// the sum over rows of each row's estimate of -log p(scored tokens | context) in nats (a bound, mean
// of n_mc stratified draws), and adds the number of scored tokens to *count. `seed` fixes the draws.
double diffusion_nll_bound(models::LanguageModel& model, const Tensor& clean, const std::vector<uint8_t>& scored,
                           int64_t n_mc, uint64_t seed, int64_t* count);

}  // namespace sw::train
