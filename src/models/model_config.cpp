#include "models/model_config.h"

#include "models/config_fields.h"
#include "models/mixture_of_depths.h"
#include "models/registry.h"
#include "models/schedule.h"

namespace sw::models {

static std::string type_of(const json& j, const std::string& where) {
  SW_CHECK(j.is_object(), "config", where, ": expected an object with a \"type\" field, got ", json_brief(j));
  auto it = j.find("type");
  SW_CHECK(it != j.end() && it->is_string(), "config", where, ".type: expected a string naming a registered type");
  return it->get<std::string>();
}

// Mixers whose head width defaults to d_model / n_heads: with head_dim 0, n_heads must divide
// d_model, or the width would be silently truncated (and n_heads 0 would divide by zero).
static void check_head_split(const json& mixer, const std::string& type, int64_t d_model, const std::string& at) {
  if (type != "attention" && type != "yoco-cross" && type != "ttt-linear" && type != "lightning") return;
  const int64_t head_dim = mixer.contains("head_dim") ? mixer["head_dim"].get<int64_t>() : 0;
  if (head_dim > 0 || !mixer.contains("n_heads")) return;
  const int64_t n_heads = mixer["n_heads"].get<int64_t>();
  SW_CHECK(n_heads > 0 && d_model % n_heads == 0, "config", at, ".n_heads: ", n_heads, " does not divide d_model ",
           d_model, " (head_dim 0 means d_model / n_heads); expected a divisor of d_model in [1, ", d_model,
           "], or set head_dim");
}

void check_objective(const ModelConfig& c, const std::string& where) {
  SW_CHECK(c.objective == "autoregressive" || c.objective == "masked_diffusion", "config", where,
           ".objective: expected autoregressive or masked_diffusion, got '", cut_text(c.objective), "'");
  SW_CHECK(c.mask_id >= -1 && c.mask_id < c.vocab_size, "config", where, ".mask_id: expected -1 (vocab_size - 1) or an id in [0, ",
           c.vocab_size, ") (vocab_size), got ", c.mask_id);
}

ModelConfig parse_model_config(const json& j, const std::string& where) {
  ModelConfig c;
  FieldReader r(j, where);
  for (const char* nested : {"mixer", "ffn", "mixers", "ffns", "layers", "shared", "mixture_of_depths"})
    r.allow(nested);
  c.visit(r);
  r.finish();
  SW_CHECK(!(j.contains("mixer") && j.contains("mixers")), "config", where,
           ": give either \"mixer\" (every block alike) or \"mixers\" with \"layers\" (a schedule), not both");
  if (j.contains("mixer")) c.mixer = j["mixer"];
  if (j.contains("ffn")) c.ffn = j["ffn"];
  if (j.contains("mixers")) c.mixers = j["mixers"];
  if (j.contains("ffns")) c.ffns = j["ffns"];
  if (j.contains("layers")) c.layers = j["layers"];
  if (j.contains("mixture_of_depths"))
    c.mixture_of_depths = parse_fields<MixtureOfDepthsConfig>(j["mixture_of_depths"], where + ".mixture_of_depths");
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
  SW_CHECK(c.norm_eps > 0 && c.norm_eps < 1, "config", where, ".norm_eps: expected a number in (0, 1), got ", c.norm_eps);
  SW_CHECK(c.init_std > 0 && c.init_std <= 10, "config", where, ".init_std: expected a number in (0, 10], got ",
           c.init_std);
  check_objective(c, where);
  // Every distinct mixer and FFN config is checked once, naming where it was written.
  if (c.has_schedule()) {
    SW_CHECK(c.mixers.is_object(), "config", where, ".mixers: expected an object of named mixer configs");
    for (auto it = c.mixers.begin(); it != c.mixers.end(); ++it) {
      const std::string at = where + ".mixers." + it.key();
      const std::string type = type_of(it.value(), at);
      find_mixer(type, at).check(it.value(), at);
      check_head_split(it.value(), type, c.d_model, at);
    }
    if (c.ffns.is_object())
      for (auto it = c.ffns.begin(); it != c.ffns.end(); ++it) {
        const std::string at = where + ".ffns." + it.key();
        find_ffn(type_of(it.value(), at), at).check(it.value(), at);
      }
  } else {
    const std::string type = type_of(c.mixer, where + ".mixer");
    find_mixer(type, where + ".mixer").check(c.mixer, where + ".mixer");
    check_head_split(c.mixer, type, c.d_model, where + ".mixer");
  }
  find_ffn(type_of(c.ffn, where + ".ffn"), where + ".ffn").check(c.ffn, where + ".ffn");
  check_mixture_of_depths(c, resolve_schedule(c, where), where);
  return c;
}

ModelConfig load_model_config(const std::string& path) { return parse_model_config(read_json_file(path), path); }

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
  if (c.mixture_of_depths.enabled()) j["mixture_of_depths"] = fields_to_json(c.mixture_of_depths);
  return j;
}

}  // namespace sw::models
