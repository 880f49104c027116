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
                                           const nn::MixerSite& site, std::mt19937_64& rng,
                                           const std::string& where)>
      make;
};

// The FFN slot: a position-wise map after the mixer, or none at all (Mamba-style blocks). make()
// returns null for "none"; the block then has no second norm and no FFN.
struct FfnEntry {
  std::string type;
  std::function<void(const nlohmann::json& cfg, const std::string& where)> check;
  std::function<std::unique_ptr<nn::Ffn>(const nlohmann::json& cfg, const ModelConfig& model,
                                         const nn::MixerSite& site, std::mt19937_64& rng, const std::string& where)>
      make;
};

// Parses a mixer's own config struct from its JSON object (which also carries "type").
template <class Config>
Config parse_mixer_fields(const nlohmann::json& j, const std::string& where);

// The registry entry of a mixer class whose constructor is
// Layer(int64_t d_model, const Config&, int64_t n_layers, std::mt19937_64&).
template <class Config, class Layer>
MixerEntry make_mixer_entry(const char* type, const char* family);

// Each family registers its mixers in its own file (models/registry_<family>.cpp), so adding an
// architecture touches one line of one family's table.
std::vector<MixerEntry> attention_mixers();
std::vector<MixerEntry> linear_attention_mixers();  // linear attention, RetNet, GLA, HGRN2, Mamba2, RWKV-6
std::vector<MixerEntry> delta_rule_mixers();        // DeltaNet, Gated DeltaNet, RWKV-7
std::vector<MixerEntry> scan_mixers();              // Mamba, HGRN, TTT
std::vector<MixerEntry> hybrid_mixers();            // parallel heads (Hymba), YOCO cross-decoder
std::vector<FfnEntry> moe_ffns();                   // sparse mixture of experts (models/registry_moe.cpp)

const std::vector<MixerEntry>& mixer_registry();
const std::vector<FfnEntry>& ffn_registry();
const MixerEntry& find_mixer(const std::string& type, const std::string& where);
const FfnEntry& find_ffn(const std::string& type, const std::string& where);

}  // namespace sw::models

#include "models/registry_impl.h"  // the two templates above
