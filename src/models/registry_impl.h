// Definitions of registry.h's templates (included at its end).
#pragma once

#include "models/config_fields.h"

namespace sw::models {

template <class Config>
Config parse_mixer_fields(const nlohmann::json& j, const std::string& where) {
  Config c;
  FieldReader r(j, where);
  r.allow("type");
  c.visit(r);
  r.finish();
  return c;
}

template <class Config, class Layer>
MixerEntry make_mixer_entry(const char* type, const char* family) {
  return {type, family, [](const nlohmann::json& j, const std::string& where) { parse_mixer_fields<Config>(j, where); },
          [](const nlohmann::json& j, const ModelConfig& m, std::mt19937_64& rng, const std::string& where) {
            return std::unique_ptr<nn::Mixer>(
                std::make_unique<Layer>(m.d_model, parse_mixer_fields<Config>(j, where), m.n_layers, rng));
          }};
}

}  // namespace sw::models
