#include "models/registry.h"

#include <cmath>

#include "models/config_fields.h"
#include "nn/attention/mla.h"
#include "nn/attention/softmax_attention.h"

namespace sw::models {
namespace {

struct SwiGluConfig {
  template <class V>
  void visit(V&) {}
};

}  // namespace

std::vector<MixerEntry> attention_mixers() {
  return {
      make_mixer_entry<nn::AttentionConfig, nn::SoftmaxAttention>("attention", "attention"),
      make_mixer_entry<nn::MlaConfig, nn::MultiHeadLatentAttention>("mla", "attention"),
  };
}

const std::vector<MixerEntry>& mixer_registry() {
  static const std::vector<MixerEntry> r = [] {
    std::vector<MixerEntry> all;
    for (auto family : {attention_mixers, linear_attention_mixers, delta_rule_mixers, scan_mixers})
      for (MixerEntry& e : family()) all.push_back(std::move(e));
    return all;
  }();
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
