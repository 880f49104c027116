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

// A layer constructor takes either (d_model, cfg, n_layers, rng) or, when its parametrisation depends
// on depth, (d_model, cfg, nn::MixerSite, rng).
template <class Config, class Layer>
MixerEntry make_mixer_entry(const char* type, const char* family) {
  return {type, family, [](const nlohmann::json& j, const std::string& where) { parse_mixer_fields<Config>(j, where); },
          [](const nlohmann::json& j, const ModelConfig& m, const nn::MixerSite& site, std::mt19937_64& rng,
             const std::string& where) {
            Config c = parse_mixer_fields<Config>(j, where);
            if constexpr (std::is_constructible_v<Layer, int64_t, const Config&, const nn::MixerSite&,
                                                  std::mt19937_64&>)
              return std::unique_ptr<nn::Mixer>(std::make_unique<Layer>(m.d_model, c, site, rng));
            else
              return std::unique_ptr<nn::Mixer>(std::make_unique<Layer>(m.d_model, c, site.n_layers, rng));
          }};
}

}  // namespace sw::models
