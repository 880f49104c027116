#include "models/presets.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"

namespace sw::models {

ModelConfig resolve_preset(const std::string& name_or_path) {
  for (const EmbeddedPreset& p : embedded_presets())
    if (name_or_path == p.name) {
      nlohmann::json j = nlohmann::json::parse(p.json_text, nullptr, false);
      SW_CHECK(!j.is_discarded(), "preset", "embedded preset ", p.name, " is not valid JSON");
      return parse_model_config(j, std::string("preset ") + p.name);
    }
  if (std::filesystem::exists(name_or_path)) return load_model_config(name_or_path);
  std::string known;
  for (const std::string& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error(str_cat("[preset] '", name_or_path, "' is neither a preset nor a config file (presets: ", known, ")"));
}

std::vector<std::string> preset_names(const std::string& size) {
  std::vector<std::string> out;
  for (const EmbeddedPreset& p : embedded_presets()) {
    if (!size.empty()) {
      nlohmann::json j = nlohmann::json::parse(p.json_text, nullptr, false);
      if (j.is_discarded() || j.value("size", "") != size) continue;
    }
    out.push_back(p.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace sw::models
