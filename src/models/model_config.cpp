#include "models/model_config.h"

#include <fstream>
#include <sstream>

#include "models/config_fields.h"
#include "models/registry.h"

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
  r.allow("mixer");
  r.allow("ffn");
  c.visit(r);
  r.finish();
  if (j.contains("mixer")) c.mixer = j["mixer"];
  if (j.contains("ffn")) c.ffn = j["ffn"];
  SW_CHECK(c.vocab_size > 0 && c.d_model > 0 && c.n_layers > 0, "config", where,
           ": vocab_size, d_model and n_layers must be positive");
  SW_CHECK(c.norm_eps > 0 && c.init_std > 0, "config", where, ": norm_eps and init_std must be positive");
  find_mixer(type_of(c.mixer, where + ".mixer"), where + ".mixer").check(c.mixer, where + ".mixer");
  find_ffn(type_of(c.ffn, where + ".ffn"), where + ".ffn");
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
  j["mixer"] = c.mixer;
  j["ffn"] = c.ffn;
  return j;
}

}  // namespace sw::models
