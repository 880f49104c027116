// libFuzzer target: the model-config parser (bounded JSON, field ranges, registry checks, schedule)
// and the size estimate of memory admission; small accepted configs are also built, so a value the
// parser lets through must not crash a layer's constructor.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/bounded_json.h"
#include "models/model_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nlohmann::json j = sw::parse_json_bounded(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
    sw::models::ModelConfig c = sw::models::parse_model_config(j, "fuzz.json");
    sw::models::SizeEstimate e = sw::models::estimate_parameters(c, "fuzz.json");
    if (e.parameters < 2e5) (void)sw::models::build_model(c, "fuzz.json");
  } catch (const sw::Error&) {
  }
  return 0;
}
