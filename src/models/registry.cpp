#include "models/registry.h"

#include <cmath>

#include "models/config_fields.h"
#include "nn/attention/mla.h"
#include "nn/attention/softmax_attention.h"

namespace sw::models {
namespace {

// The dense MLPs' own field: their width (the model's ffn_hidden unless given).
struct MlpConfig {
  int64_t hidden = 0;
  template <class V>
  void visit(V& v) {
    v("hidden", hidden, "hidden width (0 = the model's ffn_hidden)");
  }
};

// A dense MLP entry: Mlp(dim, hidden, std, out_std, rng) with GPT-2's residual scaling of the output.
template <class Mlp>
FfnEntry mlp_entry(const char* type) {
  return {type, [](const json& j, const std::string& where) { parse_mixer_fields<MlpConfig>(j, where); },
          [](const json& j, const ModelConfig& m, const nn::MixerSite&, std::mt19937_64& rng, const std::string& where) {
            MlpConfig c = parse_mixer_fields<MlpConfig>(j, where);
            const int64_t hidden = c.hidden ? c.hidden : m.resolved_ffn_hidden();
            SW_CHECK(hidden > 0 && hidden <= (int64_t{1} << 20), "config", where, ".hidden: expected 1..2^20, got ",
                     hidden);
            double out_std = m.init_std / std::sqrt(2.0 * m.n_layers);
            return std::unique_ptr<nn::Ffn>(std::make_unique<Mlp>(m.d_model, hidden, m.init_std, out_std, rng));
          }};
}

struct NoFields {
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
    for (auto family : {attention_mixers, linear_attention_mixers, delta_rule_mixers, scan_mixers, hybrid_mixers})
      for (MixerEntry& e : family()) all.push_back(std::move(e));
    return all;
  }();
  return r;
}

const std::vector<FfnEntry>& ffn_registry() {
  static const std::vector<FfnEntry> r = [] {
    std::vector<FfnEntry> all = {
        {"none", [](const json& j, const std::string& where) { parse_mixer_fields<NoFields>(j, where); },
         [](const json&, const ModelConfig&, const nn::MixerSite&, std::mt19937_64&, const std::string&) {
           return std::unique_ptr<nn::Ffn>();
         }},
        mlp_entry<nn::SwiGluMlp>("swiglu"),
        mlp_entry<nn::GeluMlp>("gelu"),
    };
    for (FfnEntry& e : moe_ffns()) all.push_back(std::move(e));
    return all;
  }();
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
