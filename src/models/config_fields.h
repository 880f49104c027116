// Reading and writing config structs through their visit() list (gemma.cpp's idea: each field is
// declared once, with its name and help, and that one list drives parsing, printing and saving).
//
// Parsing is strict: a field of the wrong JSON type or an unknown field is an error that names the
// file, the path of the field and what was expected.
#pragma once

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/error.h"

namespace sw::models {

using json = nlohmann::json;

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
    SW_CHECK(ok, "config", where_, ".", name, ": expected ", expected<T>(), " (", help, "), got ", v.dump());
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      SW_CHECK(!(std::is_unsigned_v<T> && v.get<int64_t>() < 0), "config", where_, ".", name,
               ": expected a non-negative integer, got ", v.dump());
    }
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
      throw Error(str_cat("[config] ", where_, ": unknown field '", it.key(), "' (known: ", list, ")"));
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
