// Model conversions that keep what a trained model knows (survey section 5, MoE conversion).
//
// Sparse upcycling (Komatsuzaki et al. 2022, arXiv 2212.05055): every dense SwiGLU FFN becomes an
// MoE FFN of n_experts copies of it with a freshly initialised router. With the top-k gates
// renormalised to sum to 1 and all experts equal, the upcycled model computes exactly the dense
// function at conversion (sum_j g_j FFN(x) = FFN(x)), so training continues from the dense loss.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "models/language_model.h"

namespace sw::train {

// Replaces every FFN entry of the config that `match` accepts (the default "ffn" and each named one
// in "ffns") with rewrite(entry); returns how many it replaced. Shared by the conversions.
int rewrite_ffns(models::ModelConfig& c, const std::function<bool(const nlohmann::json&)>& match,
                 const std::function<nlohmann::json(const nlohmann::json&)>& rewrite);

struct UpcycleOptions {
  int64_t n_experts = 8;
  int64_t top_k = 2;
  std::string score = "softmax";  // router score: softmax | sigmoid
  double aux_loss_coef = 0.01;    // Switch balance loss of the converted model
  int64_t seed = 1;               // router initialisation
};

// The MoE config of a dense one: every FFN of type "swiglu" (the default "ffn" and the named
// "ffns") becomes {"type": "moe", n_experts, top_k, expert_hidden = its hidden width, renormalize}.
// A config with no SwiGLU FFN is an error naming `where`.
models::ModelConfig upcycled_config(const models::ModelConfig& dense, const UpcycleOptions& o,
                                    const std::string& where);

// Builds the upcycled model and copies the dense weights into it: every parameter of the same
// name, and each FFN's gate/up/down weights into all of its experts.
std::unique_ptr<models::LanguageModel> upcycle(models::LanguageModel& dense, const UpcycleOptions& o,
                                               const std::string& where);

}  // namespace sw::train
