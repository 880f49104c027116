#include "models/model_config.h"

#include <fstream>
#include <sstream>

#include "models/config_fields.h"
#include "models/registry.h"
#include "models/schedule.h"

namespace sw::models {

static std::string type_of(const json& j, const std::string& where) {
  SW_CHECK(j.is_object(), "config", where, ": expected an object with a \"type\" field, got ", j.dump());
  auto it = j.find("type");
  SW_CHECK(it != j.end() && it->is_string(), "config", where, ".type: expected a string naming a registered type");
  return it->get<std::string>();
}

ModelConfig parse_model_config(const json& j, const std::string& where) {
  ModelConfig c;
  FieldReader r(j, where);
  for (const char* nested : {"mixer", "ffn", "mixers", "ffns", "layers", "shared"}) r.allow(nested);
  c.visit(r);
  r.finish();
  SW_CHECK(!(j.contains("mixer") && j.contains("mixers")), "config", where,
           ": give either \"mixer\" (every block alike) or \"mixers\" with \"layers\" (a schedule), not both");
  if (j.contains("mixer")) c.mixer = j["mixer"];
  if (j.contains("ffn")) c.ffn = j["ffn"];
  if (j.contains("mixers")) c.mixers = j["mixers"];
  if (j.contains("ffns")) c.ffns = j["ffns"];
  if (j.contains("layers")) c.layers = j["layers"];
  if (j.contains("shared")) {
    const json& s = j["shared"];
    SW_CHECK(s.is_array(), "config", where, ".shared: expected a list of mixer names");
    for (const json& n : s) {
      SW_CHECK(n.is_string(), "config", where, ".shared: expected mixer names (strings), got ", n.type_name());
      c.shared.push_back(n.get<std::string>());
    }
  }
  SW_CHECK(c.vocab_size > 0 && c.d_model > 0 && c.n_layers > 0, "config", where,
           ": vocab_size, d_model and n_layers must be positive");
  SW_CHECK(c.n_layers <= 4096, "config", where, ".n_layers: at most 4096, got ", c.n_layers);
  SW_CHECK(c.meta_tokens >= 0 && c.meta_tokens <= 4096, "config", where, ".meta_tokens: expected 0..4096, got ",
           c.meta_tokens);
  SW_CHECK(c.norm_eps > 0 && c.init_std > 0, "config", where, ": norm_eps and init_std must be positive");
  // Every distinct mixer and FFN config is checked once, naming where it was written.
  if (c.has_schedule()) {
    SW_CHECK(c.mixers.is_object(), "config", where, ".mixers: expected an object of named mixer configs");
    for (auto it = c.mixers.begin(); it != c.mixers.end(); ++it) {
      const std::string at = where + ".mixers." + it.key();
      find_mixer(type_of(it.value(), at), at).check(it.value(), at);
    }
    if (c.ffns.is_object())
      for (auto it = c.ffns.begin(); it != c.ffns.end(); ++it) {
        const std::string at = where + ".ffns." + it.key();
        find_ffn(type_of(it.value(), at), at).check(it.value(), at);
      }
  } else {
    find_mixer(type_of(c.mixer, where + ".mixer"), where + ".mixer").check(c.mixer, where + ".mixer");
  }
  find_ffn(type_of(c.ffn, where + ".ffn"), where + ".ffn").check(c.ffn, where + ".ffn");
  resolve_schedule(c, where);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream f(path);
  SW_CHECK(f.good(), "config", "cannot open ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  SW_CHECK(!j.is_discarded(), "config", path, ": not valid JSON");
  return parse_model_config(j, path);
}

json model_config_to_json(const ModelConfig& c) {
  json j = fields_to_json(c);
  if (c.has_schedule()) {
    j["mixers"] = c.mixers;
    j["layers"] = c.layers;
    if (!c.ffns.is_null()) j["ffns"] = c.ffns;
    if (!c.shared.empty()) j["shared"] = c.shared;
  } else {
    j["mixer"] = c.mixer;
  }
  j["ffn"] = c.ffn;
  return j;
}

}  // namespace sw::models
