#include "models/schedule.h"

#include <map>
#include <set>

#include "core/error.h"
#include "models/model_config.h"

namespace sw::models {

using json = nlohmann::json;

namespace {

std::string names_of(const json& obj) {
  std::string s;
  for (auto it = obj.begin(); it != obj.end(); ++it) s += (s.empty() ? "" : ", ") + it.key();
  return s;
}

const json& named(const json& table, const std::string& name, const std::string& where, const char* table_name) {
  auto it = table.find(name);
  SW_CHECK(it != table.end(), "config", where, ": '", name, "' is not in \"", table_name, "\" (defined: ",
           names_of(table), ")");
  return *it;
}

}  // namespace

std::vector<LayerSpec> resolve_schedule(const ModelConfig& c, const std::string& where) {
  std::vector<LayerSpec> out;
  if (!c.has_schedule()) {
    SW_CHECK(c.layers.is_null(), "config", where, ".layers: needs \"mixers\" (the names it refers to)");
    SW_CHECK(c.ffns.is_null(), "config", where, ".ffns: needs \"mixers\" and \"layers\"");
    SW_CHECK(c.shared.empty(), "config", where, ".shared: needs \"mixers\" and \"layers\"");
    for (int64_t i = 0; i < c.n_layers; ++i) out.push_back({"", c.mixer, "", c.ffn, false});
    return out;
  }
  SW_CHECK(c.mixers.is_object() && !c.mixers.empty(), "config", where,
           ".mixers: expected an object of named mixer configs, e.g. {\"A\": {\"type\": \"attention\"}}");
  const json ffns = c.ffns.is_null() ? json::object() : c.ffns;
  SW_CHECK(ffns.is_object(), "config", where, ".ffns: expected an object of named FFN configs");
  std::set<std::string> shared(c.shared.begin(), c.shared.end());
  for (const std::string& s : shared) named(c.mixers, s, where + ".shared", "mixers");

  auto spec = [&](const std::string& mixer, const std::string& ffn, const std::string& at) {
    LayerSpec l;
    l.mixer_name = mixer;
    l.mixer = named(c.mixers, mixer, at + ".mixer", "mixers");
    l.ffn_name = ffn;
    l.ffn = ffn.empty() ? c.ffn : named(ffns, ffn, at + ".ffn", "ffns");
    l.shared = shared.count(mixer) > 0;
    return l;
  };
  if (c.layers.is_string()) {
    const std::string pattern = c.layers.get<std::string>();
    SW_CHECK(!pattern.empty() && c.n_layers % static_cast<int64_t>(pattern.size()) == 0, "config", where,
             ".layers: pattern \"", pattern, "\" has ", pattern.size(), " layers, which must divide n_layers ",
             c.n_layers);
    SW_CHECK(ffns.empty(), "config", where, ".ffns: a pattern string gives every block the config's \"ffn\"; name ",
             "per-layer FFNs with the list form [{\"mixer\": ..., \"ffn\": ...}]");
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string name(1, pattern[static_cast<size_t>(i) % pattern.size()]);
      out.push_back(spec(name, "", str_cat(where, ".layers[", i % pattern.size(), "]")));
    }
  } else if (c.layers.is_array()) {
    SW_CHECK(static_cast<int64_t>(c.layers.size()) == c.n_layers, "config", where, ".layers: ", c.layers.size(),
             " entries, expected n_layers = ", c.n_layers);
    for (size_t i = 0; i < c.layers.size(); ++i) {
      const json& e = c.layers[i];
      const std::string at = str_cat(where, ".layers[", i, "]");
      SW_CHECK(e.is_object(), "config", at, ": expected {\"mixer\": name, \"ffn\": name}");
      for (auto it = e.begin(); it != e.end(); ++it)
        SW_CHECK(it.key() == "mixer" || it.key() == "ffn", "config", at, ": unknown field '", it.key(),
                 "' (known: ffn, mixer)");
      SW_CHECK(e.contains("mixer") && e["mixer"].is_string(), "config", at, ".mixer: expected a name from \"mixers\"");
      SW_CHECK(!e.contains("ffn") || e["ffn"].is_string(), "config", at, ".ffn: expected a name from \"ffns\"");
      out.push_back(spec(e["mixer"].get<std::string>(), e.value("ffn", std::string()), at));
    }
  } else {
    throw Error(str_cat("[config] ", where, ".layers: expected a pattern string over the names in \"mixers\" (",
                        names_of(c.mixers), ") or a list of {\"mixer\", \"ffn\"}"));
  }
  // A shared block is one module: every use must pair the mixer with the same FFN.
  std::map<std::string, std::string> shared_ffn;
  for (const LayerSpec& l : out) {
    if (!l.shared) continue;
    auto [it, fresh] = shared_ffn.emplace(l.mixer_name, l.ffn_name);
    SW_CHECK(fresh || it->second == l.ffn_name, "config", where, ".shared: block '", l.mixer_name,
             "' is used with two FFNs ('", it->second, "' and '", l.ffn_name, "'); a shared block has one");
  }
  std::set<std::string> used;
  for (const LayerSpec& l : out) used.insert(l.mixer_name);
  for (auto it = c.mixers.begin(); it != c.mixers.end(); ++it)
    SW_CHECK(used.count(it.key()), "config", where, ".mixers.", it.key(), ": defined but no layer uses it");
  return out;
}

static std::string describe_layers(const ModelConfig& c);

std::string describe_schedule(const ModelConfig& c) {
  std::string s = describe_layers(c);
  const MixtureOfDepthsConfig& m = c.mixture_of_depths;
  if (m.enabled()) s += str_cat(", mixture-of-depths: every ", m.every, " block(s) at capacity ", m.capacity);
  return s;
}

static std::string describe_layers(const ModelConfig& c) {
  auto type = [](const json& j) { return j.is_object() ? j.value("type", std::string("?")) : std::string("?"); };
  if (!c.has_schedule()) return str_cat(type(c.mixer), " x", c.n_layers, " (ffn ", type(c.ffn), ")");
  std::string s;
  if (c.layers.is_string()) {
    s = c.layers.get<std::string>();
    if (!s.empty() && static_cast<int64_t>(s.size()) < c.n_layers) s += str_cat(" x", c.n_layers / static_cast<int64_t>(s.size()));
  } else {
    for (const json& e : c.layers) s += e.value("mixer", std::string("?")) + (e.contains("ffn") ? "/" + e.value("ffn", std::string()) : "") + " ";
    if (!s.empty()) s.pop_back();
  }
  s += " (";
  bool first = true;
  for (auto it = c.mixers.begin(); it != c.mixers.end(); ++it) {
    s += str_cat(first ? "" : ", ", it.key(), " = ", type(it.value()));
    for (const std::string& n : c.shared)
      if (n == it.key()) s += " shared";
    first = false;
  }
  if (c.ffns.is_object())
    for (auto it = c.ffns.begin(); it != c.ffns.end(); ++it) s += str_cat(", ", it.key(), " = ffn ", type(it.value()));
  s += str_cat("; ffn ", type(c.ffn), ")");
  if (c.meta_tokens) s += str_cat(", ", c.meta_tokens, " meta tokens");
  return s;
}

}  // namespace sw::models
