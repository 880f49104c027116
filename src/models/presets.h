// Presets: one JSON per architecture and size in configs/, embedded into the binary at build time.
// A preset is named by its file name ("transformer-small"); a path to a JSON file works wherever a
// preset name does.
#pragma once

#include <string>
#include <vector>

#include "models/model_config.h"

namespace sw::models {

struct EmbeddedPreset {
  const char* name;
  const char* json_text;
};
const std::vector<EmbeddedPreset>& embedded_presets();

// A preset name, or a path to a config JSON file.
ModelConfig resolve_preset(const std::string& name_or_path);
// Names of the presets of one size class ("" = all), in name order.
std::vector<std::string> preset_names(const std::string& size = "");

}  // namespace sw::models
