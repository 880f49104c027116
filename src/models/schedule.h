// The per-layer schedule of a model: which mixer and which FFN each block holds (survey section 6,
// inter-layer hybrids). A config gives it in one of three forms:
//
//   single mixer (every block alike):   "mixer": {...}, "ffn": {...}
//   pattern over named mixers:          "mixers": {"L": {...}, "A": {...}}, "layers": "LLLA"
//                                       (repeated to n_layers, which it must divide)
//   explicit list:                      "mixers": {...}, "ffns": {"d": {...}, "m": {...}},
//                                       "layers": [{"mixer": "L", "ffn": "d"}, ...] (n_layers entries)
//
// A layer's FFN is the named one from "ffns" when its list entry names one, else the config's
// "ffn". "shared": ["S"] makes every block whose mixer is named S one block reused at each of its
// depths (Zamba: one parameter set, a cache per call site).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sw::models {

struct ModelConfig;

struct LayerSpec {
  std::string mixer_name;  // key in "mixers" ("" in the single-mixer form)
  nlohmann::json mixer;    // the mixer's config (with "type")
  std::string ffn_name;    // key in "ffns" ("" = the config's "ffn")
  nlohmann::json ffn;      // the FFN's config (with "type")
  bool shared = false;     // one block for every layer with this mixer name
};

// n_layers specs; validates names, pattern, list entries and shared names (errors name `where` and
// the field). Does not check the mixers' own fields (parse_model_config does, once per mixer).
std::vector<LayerSpec> resolve_schedule(const ModelConfig& c, const std::string& where);

// One line for people: "LLLA x2 (L = gated-deltanet, A = attention; ffn swiglu)", with the
// Mixture-of-Depths routing appended when it is on.
std::string describe_schedule(const ModelConfig& c);

}  // namespace sw::models
