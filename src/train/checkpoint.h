// Checkpoints: one safetensors file holding the model weights ("model.<param>"), the optimizer state
// ("opt.m.<param>", "opt.v.<param>") and, in its metadata, the model config, the training state (step,
// tokens seen, data sampler RNG state, training config) and the tokenizer's file name. One file
// written through write_file_atomic (temp, fsync, rename) makes the whole checkpoint atomic: a crash
// mid-write leaves the previous checkpoint intact.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "models/language_model.h"
#include "train/optimizer.h"

namespace sw::train {

struct TrainState {
  int64_t step = 0;            // optimizer steps completed
  int64_t tokens = 0;          // training tokens consumed
  std::string sampler_state;   // the batch sampler's serialised RNG state (the data position)
  nlohmann::json train_config = nlohmann::json::object();
  std::string tokenizer;       // tokenizer file name, relative to the checkpoint's folder
  // MoE: per layer with a routed FFN, the fraction of assignments per expert in the last training
  // step (informational; `inspect` shows it). Empty for dense models.
  std::vector<std::vector<double>> expert_load;
};

void save_checkpoint(const std::string& path, models::LanguageModel& model, const Optimizer* opt,
                     const TrainState& state);

struct Checkpoint {
  models::ModelConfig config;
  TrainState state;
  io::SafetensorsFile file;
  bool has_optimizer = false;
};

// Reads and validates the file and its metadata (format tag, config, train state).
Checkpoint read_checkpoint(const std::string& path);
// Copies "model.<param>" tensors into the model; every parameter must be present with its shape.
void load_model_weights(models::LanguageModel& model, const Checkpoint& ckpt);
// Restores the optimizer's moments and step count.
void load_optimizer_state(Optimizer& opt, const Checkpoint& ckpt);

}  // namespace sw::train
