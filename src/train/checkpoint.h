// Checkpoints: one safetensors file holding the model weights ("model.<param>"), the optimizer state
// ("opt.m.<param>", "opt.v.<param>") and, in its metadata, the model config, the training state (step,
// tokens seen, data sampler RNG state, training config) and the tokenizer's file name. One file
// written through write_file_atomic (temp, fsync, rename) makes the whole checkpoint atomic: a crash
// mid-write leaves the previous checkpoint intact.
//
// Integrity: the metadata key "integrity" holds a 64-bit checksum (core/hash.h) of every tensor's
// bytes and of the config and train-state texts; read_checkpoint verifies them all and names the
// first tensor or field that differs. Files written before checksums existed still load, with
// Checkpoint::verified false (the CLI says the check was skipped). Every saved value is finite:
// save_checkpoint refuses a non-finite parameter or optimizer state, and loading rejects one.
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
  int64_t optimizer_steps = 0;  // the optimizer's own step count (bias correction)
  // MoE: per layer with a routed FFN, the fraction of assignments per expert in the last training
  // step (informational; `inspect` shows it). Empty for dense models.
  std::vector<std::vector<double>> expert_load;
};

// Throws sw::Error (and writes nothing) when a parameter or optimizer state holds a NaN or inf.
void save_checkpoint(const std::string& path, models::LanguageModel& model, const Optimizer* opt,
                     const TrainState& state);

struct Checkpoint {
  models::ModelConfig config;
  TrainState state;
  io::SafetensorsFile file;
  bool has_optimizer = false;
  bool verified = false;  // checksums present and matching; false for files from before checksums
};

// Reads and validates the file and its metadata (format tag, checksums, config, train state, every
// tensor finite).
Checkpoint read_checkpoint(const std::string& path);
// The same checks over a file already read (the fuzz target parses bytes in memory).
Checkpoint checkpoint_from(io::SafetensorsFile file);
// Copies "model.<param>" tensors into the model; every parameter must be present with its shape and
// dtype f32.
void load_model_weights(models::LanguageModel& model, const Checkpoint& ckpt);
// Restores the optimizer's moments and step count.
void load_optimizer_state(Optimizer& opt, const Checkpoint& ckpt);

// "" when every element is finite, else "<name> element <i> (<value>)" of the first that is not.
std::string first_nonfinite(const std::string& name, const Tensor& t);
// The first non-finite parameter of the model, "" when all are finite.
std::string first_nonfinite_parameter(models::LanguageModel& model);

// Keeping the last good checkpoints: before `path` is replaced, its current file (a checkpoint of
// step `previous_step`) stays on as "<stem>.step-<previous_step>.safetensors" (a hard link, so both
// names are whole files at every moment), and only the newest keep - 1 such files are kept.
// keep = 1 keeps only `path`.
void keep_previous_checkpoint(const std::string& path, int64_t previous_step, int64_t keep);
// The kept older checkpoints of `path`, oldest first.
std::vector<std::string> previous_checkpoints(const std::string& path);

}  // namespace sw::train
