// Mixture-of-Depths (Raposo et al. 2024, arXiv 2404.02258): a block that only some of a sequence's
// tokens go through; the others ride the residual stream past it unchanged. It composes with any
// block of the registry (any mixer, any FFN, MoE included): ModelConfig::mixture_of_depths routes
// every `every`-th block, and the routed Block (models/language_model.h) hands its residual delta
// f(x) = block(x) - x (mixer and FFN halves) to DepthRouter::forward below.
//
// Router: a linear map D -> 1 without bias, r = x . w_r, on the block's input x (the residual stream).
//
// Training (no ModelState): per sequence the k = ceil(capacity * T) tokens with the largest r are
// chosen (ties: the earlier position), kept in their original order, gathered to [B, k, D] and run
// through the block with their original positions (MixerContext::positions: attention applies RoPE
// at them; recurrent mixers see a shorter sequence). Output:
//   y = x + scatter(s(r_sel) * f(x_sel)),   s = sigmoid (default) or the identity (the paper's r),
// so the router gets gradients through the scale. Unchosen rows are x exactly.
//   Why sigmoid by default: at initialisation r ~ 1e-3 (small weights on a small residual stream), so
//   the paper's raw r would multiply the block's output, and the gradient reaching its weights, by
//   ~1e-3: the routed block would start switched off. sigmoid(r) starts at 1/2, is monotone in r
//   (same top-k, same threshold), bounded, and is the very quantity the auxiliary loss calibrates.
//   "scale": "logit" gives the paper's form.
//
// Inference (a ModelState: prefill and decode) and every forward without gradients (evaluation):
// top-k over a sequence is not causal, so a token takes the block iff r > 0 (sigmoid(r) > 1/2),
// token by token; skipped tokens never enter the block's
// KV cache or recurrent state, so a prefill of T tokens and T single-token decode steps route alike
// and leave the same state. Training teaches this predictor with the auxiliary loss
//   aux = aux_loss_coef * mean_{b,t} BCE(sigmoid(sg(x) . w_r), 1[t in top-k of row b])
// (stop-gradient on x: the loss trains w_r only, not the layers below; the paper's "auxiliary loss"
// variant applied to the router itself). LanguageModel::loss adds it like MoE's auxiliary losses.
//   Batch > 1 at inference: the rows share one LayerState of uniform length, so every row must route
// the same number of tokens in a call (then each row's state holds its own tokens, at their own
// positions, exactly); rows that diverge are refused with an error: decode such sequences at batch 1
// (as generation does). Without a state (evaluation) diverging rows simply run one at a time.
//
// Blocks that are not routed: shared blocks (one router for several depths) and YOCO cross-decoders
// (the shared KV spans all tokens); mixers that derive positions from the sequence index instead of
// MixerContext::positions (MLA, RetNet), and attention with a window or a block-sparse pattern
// (which count keys by index). These are refused at config time, naming the field.
#pragma once

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "models/model_config.h"
#include "models/schedule.h"
#include "nn/mixer.h"
#include "nn/module.h"

namespace sw::models {

// Is block `layer` (0-based) routed? Every `every`-th block: blocks every-1, 2*every-1, ...
bool depth_routed(const MixtureOfDepthsConfig& c, int64_t layer);
// Tokens of a sequence of T a routed block takes in training: ceil(capacity * T) in [1, T] (0 for T 0).
int64_t depth_capacity_tokens(double capacity, int64_t T);
// Per row of scores [B, T]: the positions of the k largest (ties: the earlier position; NaN lowest),
// ascending. Returns [B * k].
std::vector<int32_t> top_k_positions(const float* scores, int64_t B, int64_t T, int64_t k);

// Validates c.mixture_of_depths against the schedule: field ranges, and that every routed block can
// be routed. Errors name `where` and the field.
void check_mixture_of_depths(const ModelConfig& c, const std::vector<LayerSpec>& schedule, const std::string& where);

class DepthRouter : public nn::Module {
 public:
  // The block's residual delta on a subset of tokens x [B, k, D], under a context carrying their
  // positions (and the block's state at inference).
  using Delta = std::function<Variable(const Variable& x, const nn::MixerContext& ctx)>;

  // layer: the block's index (for messages); w_r ~ N(0, init_std) like the model's other weights.
  DepthRouter(int64_t d_model, const MixtureOfDepthsConfig& cfg, int64_t layer, double init_std,
              std::mt19937_64& rng);
  // x [B, T, D] -> x + scatter(s(r_sel) * delta(x_sel)); see the file comment.
  Variable forward(const Variable& x, const nn::MixerContext& ctx, const Delta& delta);
  // The auxiliary BCE loss of the last training forward (undefined after an inference call or with
  // aux_loss_coef 0).
  Variable aux_loss() const { return aux_; }
  Variable& weight() { return *w_; }  // [1, D]
  // The last forward's choice: per_row tokens per row, their positions within the call's x
  // ([B * per_row], ascending per row).
  int64_t last_per_row() const { return last_per_row_; }
  const std::vector<int32_t>& last_positions() const { return last_positions_; }

 private:
  MixtureOfDepthsConfig cfg_;
  int64_t layer_;
  Variable* w_;
  Variable aux_;
  int64_t last_per_row_ = -1;  // -1: no forward yet
  std::vector<int32_t> last_positions_;
};

}  // namespace sw::models
