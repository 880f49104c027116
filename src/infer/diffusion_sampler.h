// Sampling from a masked-diffusion LM (LLaDA's generate, ML-GSAI/LLaDA: generate.py; docs/research/
// methods.md 5.3), with Fast-dLLM's confidence-threshold parallel decoding (NVlabs/Fast-dLLM:
// llada/generate.py, get_transfer_index; methods.md 5.6).
//
// The canvas is the prompt followed by gen_length [MASK] ids, cut into gen_length / block_length
// blocks filled left to right (semi-autoregressive when there is more than one block). Each block
// gets steps / num_blocks steps; at each step the model sees the whole canvas and, for every masked
// position of the current block:
//   x0   = argmax_v (logit_v + T * g_v), g_v standard Gumbel in f64 (LLaDA's exp(l) / (-log u)^T;
//          T = 0 is the plain argmax), so x0 is a sample of softmax(logits / T);
//   conf = softmax(logits)[x0] in f64 (low_confidence) or a uniform draw (random);
// where the [MASK] id itself is never a candidate (its logit is taken as -inf, MDLM's SUBS
// parameterisation; LLaDA relies on training to make it improbable), so every step commits real
// tokens and a threshold loop always ends;
// then the n_i most confident masked positions of the block are committed to x0, where n_i follows
// get_num_transfer_tokens: the block's masked count split evenly over its steps, the remainder one
// each to the first steps. Positions right of the block are never written; ties in confidence go to
// the leftmost position.
// threshold > 0 (Fast-dLLM): each step commits every masked position of the block whose confidence
// is >= threshold, and always the most confident one; a block takes as many steps as it needs (the
// steps setting is then unused), so tokens per step is the speed-up over one per step.
// cfg_scale > 0 (LLaDA's unsupervised classifier-free guidance): logits = u + (cfg + 1) (c - u),
// with c the logits of the canvas and u those of the canvas with its prompt replaced by [MASK].
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/language_model.h"

namespace sw::infer {

struct DiffusionSamplerConfig {
  int64_t gen_length = 128;
  int64_t steps = 128;        // in all, split evenly over the blocks; at most gen_length
  int64_t block_length = 32;  // divides gen_length; = gen_length: one block (no semi-AR)
  double temperature = 0;     // Gumbel-max temperature; 0 = argmax
  std::string remasking = "low_confidence";  // low_confidence | random
  double threshold = 0;       // Fast-dLLM parallel decoding: > 0 commits every position this confident
  double cfg_scale = 0;       // classifier-free guidance scale (0 = off)
  uint64_t seed = 1;          // Gumbel noise and random remasking
};

// Checks every field (sw::Error naming it and the valid range).
void validate_diffusion_sampler(const DiffusionSamplerConfig& c, const std::string& where = "diffusion sampler");

// LLaDA's get_num_transfer_tokens: `masked` tokens over `steps` steps, base = masked / steps each and
// one more for the first masked % steps steps.
std::vector<int64_t> num_transfer_tokens(int64_t masked, int64_t steps);

// canvas ids [L] -> logits, row-major [L, vocab].
using DiffusionLogitsFn = std::function<std::vector<float>(const std::vector<int32_t>& canvas)>;

// Given after every step: the canvas, the positions committed in this step (in the order chosen,
// most confident first), and where the step stands.
struct DiffusionStep {
  int64_t step = 0;   // 1-based over the whole generation
  int64_t block = 0;  // 0-based
  int64_t block_start = 0, block_end = 0;  // canvas positions [start, end) of the current block
  const std::vector<int32_t>* canvas = nullptr;
  std::vector<int64_t> committed;
};

struct DiffusionResult {
  std::vector<int32_t> canvas;     // prompt + generated
  std::vector<int32_t> generated;  // the gen_length generated ids
  int64_t steps = 0;               // model evaluations of the canvas (twice as many forwards with CFG)
  std::vector<int64_t> committed_per_step;
  double seconds = 0;
};

DiffusionResult diffusion_generate(const DiffusionLogitsFn& logits, const std::vector<int32_t>& prompt,
                                   int32_t mask_id, int64_t vocab, const DiffusionSamplerConfig& cfg,
                                   const std::function<void(const DiffusionStep&)>& on_step = {});

// The logits function of a masked-diffusion model: one bidirectional forward of the whole canvas.
DiffusionLogitsFn model_logits_fn(models::LanguageModel& model);

// The canvas as text for a progress line: each masked id becomes `placeholder`, other ids go through
// decode (which may drop specials).
std::string render_canvas(const std::vector<int32_t>& ids, int32_t mask_id,
                          const std::function<std::string(const std::vector<int32_t>&)>& decode,
                          char placeholder = '_');

}  // namespace sw::infer
