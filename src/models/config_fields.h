// Reading and writing config structs through their visit() list (gemma.cpp's idea: each field is
// declared once, with its name and help, and that one list drives parsing, printing and saving).
//
// Parsing is strict: a field of the wrong JSON type or an unknown field is an error that names the
// file, the path of the field and what was expected. Integer fields are also bounded here, by name
// (integer_field_range below): every size, count and period of every config struct, so a crafted
// config cannot reach the builders with a value whose products overflow (README: Resource limits).
// Numbers must be finite.
#pragma once

#include <nlohmann/json.hpp>
#include <cmath>
#include <set>
#include <string_view>
#include <string>

#include "core/bounded_json.h"
#include "core/error.h"

namespace sw::models {

using json = nlohmann::json;

struct IntRange {
  int64_t min, max;
};

// The valid range of an integer config field, by name. Sizes have hard upper bounds far above any
// model this CPU engine trains (and far below overflow of their products); every other integer
// (counts, periods, ranks, experts) lies in [0, 2^24]. A seed may be any non-negative int64.
inline IntRange integer_field_range(std::string_view name) {
  struct Named {
    std::string_view name;
    IntRange range;
  };
  static constexpr int64_t k2_12 = int64_t{1} << 12, k2_16 = int64_t{1} << 16, k2_20 = int64_t{1} << 20,
                           k2_24 = int64_t{1} << 24, k2_31 = (int64_t{1} << 31) - 1;
  static constexpr Named kRanges[] = {
      {"vocab_size", {1, int64_t{1} << 21}},  // 2M ids
      {"d_model", {1, k2_16}},
      {"n_layers", {1, 4096}},
      {"ffn_hidden", {0, int64_t{1} << 18}},
      {"expert_hidden", {0, int64_t{1} << 18}},
      {"hidden", {0, int64_t{1} << 20}},
      {"n_heads", {0, k2_12}},
      {"n_kv_heads", {0, k2_12}},
      {"num_v_heads", {0, k2_12}},
      {"head_dim", {0, k2_12}},
      {"headdim", {0, k2_12}},
      {"v_head_dim", {0, k2_12}},
      {"d_state", {0, k2_12}},
      {"n_experts", {0, k2_12}},
      {"meta_tokens", {0, 4096}},
      {"every", {0, 4096}},  // Mixture-of-Depths: a period over blocks
      {"steps", {1, k2_31}},
      {"batch", {1, k2_16}},
      {"seq_len", {1, k2_20}},
      {"grad_accum", {1, k2_16}},
      {"log_every", {1, k2_31}},
      {"eval_every", {0, k2_31}},
      {"eval_batches", {0, k2_31}},
      {"save_every", {0, k2_31}},
      {"keep_checkpoints", {1, 1000}},
      {"warmup_steps", {0, k2_31}},
      {"window", {0, k2_24}},
      {"seed", {0, INT64_MAX}},
      {"mask_id", {-1, int64_t{1} << 21}},  // -1 = vocab_size - 1
      {"eval_mc", {1, 4096}},  // Monte-Carlo draws of the masked-diffusion likelihood bound
  };
  for (const Named& n : kRanges)
    if (n.name == name) return n.range;
  return {0, k2_24};
}

class FieldReader {
 public:
  FieldReader(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    SW_CHECK(j_.is_object(), "config", where_, ": expected a JSON object, got ", j_.type_name());
  }

  template <class T>
  void operator()(const char* name, T& field, const char* help) {
    known_.insert(name);
    auto it = j_.find(name);
    if (it == j_.end()) return;  // keep the default
    const json& v = *it;
    bool ok;
    if constexpr (std::is_same_v<T, bool>) ok = v.is_boolean();
    else if constexpr (std::is_integral_v<T>) ok = v.is_number_integer();
    else if constexpr (std::is_floating_point_v<T>) ok = v.is_number();
    else if constexpr (std::is_same_v<T, std::string>) ok = v.is_string();
    else ok = true;
    SW_CHECK(ok, "config", where_, ".", name, ": expected ", expected<T>(), " (", help, "), got ", json_brief(v));
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      const IntRange r = integer_field_range(name);
      // An unsigned JSON integer above INT64_MAX is out of every range.
      const bool in_range = !(v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) &&
                            v.get<int64_t>() >= r.min && v.get<int64_t>() <= r.max;
      SW_CHECK(in_range, "config", where_, ".", name, ": expected an integer in [", r.min, ", ", r.max, "] (", help,
               "), got ", json_brief(v));
    }
    if constexpr (std::is_floating_point_v<T>)
      SW_CHECK(std::isfinite(v.get<double>()), "config", where_, ".", name, ": expected a finite number (", help,
               "), got ", json_brief(v));
    field = v.get<T>();
  }

  // Fields handled outside visit() (nested objects) are declared here so they are not "unknown".
  void allow(const char* name) { known_.insert(name); }

  // Every field in the JSON must be known: a typo must not silently fall back to a default.
  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (known_.count(it.key())) continue;
      std::string list;
      for (const std::string& k : known_) list += (list.empty() ? "" : ", ") + k;
      throw Error(str_cat("[config] ", where_, ": unknown field '", cut_text(it.key()), "' (known: ", list, ")"));
    }
  }

 private:
  template <class T>
  static const char* expected() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else return "a string";
  }
  const json& j_;
  std::string where_;
  std::set<std::string> known_;
};

class FieldWriter {
 public:
  explicit FieldWriter(json& out) : out_(out) {}
  template <class T>
  void operator()(const char* name, T& field, const char*) {
    out_[name] = field;
  }

 private:
  json& out_;
};

template <class Config>
Config parse_fields(const json& j, const std::string& where) {
  Config c;
  FieldReader r(j, where);
  c.visit(r);
  r.finish();
  return c;
}

template <class Config>
json fields_to_json(Config c) {
  json j = json::object();
  FieldWriter w(j);
  c.visit(w);
  return j;
}

}  // namespace sw::models
