// Registry table of the hybrid building blocks: parallel heads in one layer (Hymba) and the YOCO
// cross-decoder. Inter-layer hybrids need no entry: they are schedules (models/schedule.h).
#include "models/registry.h"
#include "nn/hybrid/cross_decoder.h"
#include "nn/hybrid/parallel_mixer.h"

namespace sw::models {

namespace {

// {"type": "parallel", "branches": [mixer, mixer, ...], "norm_eps": 1e-6}
void check_parallel(const json& j, const std::string& where) {
  for (auto it = j.begin(); it != j.end(); ++it)
    SW_CHECK(it.key() == "type" || it.key() == "branches" || it.key() == "norm_eps", "config", where,
             ": unknown field '", it.key(), "' (known: branches, norm_eps, type)");
  SW_CHECK(j.contains("branches") && j["branches"].is_array() && j["branches"].size() >= 2 &&
               j["branches"].size() <= 8,
           "config", where, ".branches: expected a list of 2..8 mixer configs");
  SW_CHECK(!j.contains("norm_eps") || (j["norm_eps"].is_number() && j["norm_eps"].get<double>() > 0), "config", where,
           ".norm_eps: expected a positive number");
  for (size_t i = 0; i < j["branches"].size(); ++i) {
    const json& b = j["branches"][i];
    const std::string at = str_cat(where, ".branches[", i, "]");
    SW_CHECK(b.is_object() && b.contains("type") && b["type"].is_string(), "config", at,
             ": expected a mixer config with a \"type\"");
    SW_CHECK(b["type"] != "parallel", "config", at, ": parallel mixers do not nest");
    SW_CHECK(b["type"] != "yoco-cross", "config", at, ": a cross-decoder is a layer of its own, not a parallel branch");
    find_mixer(b["type"].get<std::string>(), at).check(b, at);
  }
}

std::unique_ptr<nn::Mixer> make_parallel(const json& j, const ModelConfig& m, const nn::MixerSite& site,
                                         std::mt19937_64& rng, const std::string& where) {
  check_parallel(j, where);
  std::vector<std::unique_ptr<nn::Mixer>> branches;
  for (size_t i = 0; i < j["branches"].size(); ++i) {
    const json& b = j["branches"][i];
    const std::string at = str_cat(where, ".branches[", i, "]");
    branches.push_back(find_mixer(b["type"].get<std::string>(), at).make(b, m, site, rng, at));
  }
  return std::make_unique<nn::ParallelMixer>(m.d_model, std::move(branches), j.value("norm_eps", 1e-6));
}

}  // namespace

std::vector<MixerEntry> hybrid_mixers() {
  return {
      {"parallel", "hybrid", check_parallel, make_parallel},
      make_mixer_entry<nn::CrossDecoderConfig, nn::CrossDecoderAttention>("yoco-cross", "attention"),
  };
}

}  // namespace sw::models
