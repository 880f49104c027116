#include "models/registry.h"

#include <cmath>

#include "models/config_fields.h"
#include "nn/attention/mla.h"
#include "nn/attention/softmax_attention.h"

namespace sw::models {
namespace {

// Parses a mixer's own config struct from its JSON object, which also carries "type".
template <class Config>
Config parse_mixer_fields(const json& j, const std::string& where) {
  Config c;
  FieldReader r(j, where);
  r.allow("type");
  c.visit(r);
  r.finish();
  return c;
}

template <class Config, class Layer>
MixerEntry mixer(const char* type, const char* family) {
  return {type, family, [](const json& j, const std::string& where) { parse_mixer_fields<Config>(j, where); },
          [](const json& j, const ModelConfig& m, std::mt19937_64& rng, const std::string& where) {
            return std::unique_ptr<nn::Mixer>(
                std::make_unique<Layer>(m.d_model, parse_mixer_fields<Config>(j, where), m.n_layers, rng));
          }};
}

struct SwiGluConfig {
  template <class V>
  void visit(V&) {}
};

}  // namespace

const std::vector<MixerEntry>& mixer_registry() {
  static const std::vector<MixerEntry> r = {
      mixer<nn::AttentionConfig, nn::SoftmaxAttention>("attention", "attention"),
      mixer<nn::MlaConfig, nn::MultiHeadLatentAttention>("mla", "attention"),
  };
  return r;
}

const std::vector<FfnEntry>& ffn_registry() {
  static const std::vector<FfnEntry> r = {
      {"swiglu",
       [](const json& j, const ModelConfig& m, std::mt19937_64& rng, const std::string& where) {
         parse_mixer_fields<SwiGluConfig>(j, where);
         double out_std = m.init_std / std::sqrt(2.0 * m.n_layers);
         return std::unique_ptr<nn::Ffn>(
             std::make_unique<nn::SwiGluMlp>(m.d_model, m.resolved_ffn_hidden(), m.init_std, out_std, rng));
       }},
  };
  return r;
}

template <class Entry>
static const Entry& find_entry(const std::vector<Entry>& table, const std::string& type, const std::string& where,
                               const char* what) {
  for (const Entry& e : table)
    if (e.type == type) return e;
  std::string known;
  for (const Entry& e : table) known += (known.empty() ? "" : ", ") + e.type;
  throw Error(str_cat("[config] ", where, ": unknown ", what, " type '", type, "' (registered: ", known, ")"));
}

const MixerEntry& find_mixer(const std::string& type, const std::string& where) {
  return find_entry(mixer_registry(), type, where, "mixer");
}
const FfnEntry& find_ffn(const std::string& type, const std::string& where) {
  return find_entry(ffn_registry(), type, where, "ffn");
}

}  // namespace sw::models
