// The block registry: every sequence mixer and FFN the engine can build, by type name. Adding an
// architecture adds one line to the table in registry.cpp; the builder, bench and arena find it there.
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "models/model_config.h"
#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::models {

struct MixerEntry {
  std::string type;    // "attention", "mamba2", ...
  std::string family;  // survey section: "attention", "linear", "ssm", ...
  // Validates the mixer's JSON object (fields, types) without building anything.
  std::function<void(const nlohmann::json& cfg, const std::string& where)> check;
  // Builds the mixer from its JSON object (including "type"); `where` names the file and field.
  std::function<std::unique_ptr<nn::Mixer>(const nlohmann::json& cfg, const ModelConfig& model,
                                           std::mt19937_64& rng, const std::string& where)>
      make;
};

struct FfnEntry {
  std::string type;
  std::function<std::unique_ptr<nn::Ffn>(const nlohmann::json& cfg, const ModelConfig& model, std::mt19937_64& rng,
                                         const std::string& where)>
      make;
};

const std::vector<MixerEntry>& mixer_registry();
const std::vector<FfnEntry>& ffn_registry();
const MixerEntry& find_mixer(const std::string& type, const std::string& where);
const FfnEntry& find_ffn(const std::string& type, const std::string& where);

}  // namespace sw::models
