// Memory admission: a model's size is estimated from its config before anything is allocated and
// compared with the machine's memory (core/allocator.h: memory_limit_bytes), so a config too large
// for the machine is refused at once with the figure and the field that drives it, instead of being
// OOM-killed a minute later. Per-field hard bounds are in config_fields.h (integer_field_range).
#pragma once

#include <memory>
#include <string>

#include "models/language_model.h"
#include "models/model_config.h"

namespace sw::models {

struct SizeEstimate {
  double parameters = 0;   // an estimate from the config's widths (the dominant GEMM weights)
  std::string dominant;    // the fields that drive the largest term, e.g. "vocab_size x d_model"
};
SizeEstimate estimate_parameters(const ModelConfig& c, const std::string& where);

// Refuses (sw::Error naming `where`, the estimate, the dominant fields and the limit) when
// parameters x bytes_per_parameter + extra_bytes exceed the machine's memory. `what` says what the
// bytes are for ("weights", "weights, gradients and optimizer state").
void admit_memory(const SizeEstimate& e, double bytes_per_parameter, double extra_bytes, const std::string& what,
                  const std::string& where);

// Builds the model after admitting its weights; an error from a layer's constructor is re-raised
// naming `where` (the config file or checkpoint), so "[attention] n_heads ..." says which file.
std::unique_ptr<LanguageModel> build_model(const ModelConfig& c, const std::string& where);

}  // namespace sw::models
