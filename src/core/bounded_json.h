// Bounded JSON reading: the one place where untrusted JSON text (configs, training configs,
// checkpoint metadata, safetensors headers, bench baselines) becomes a value. Header-only so the
// layers that already use nlohmann-json share it without the core linking it.
//
// - Depth is limited while parsing: nlohmann's copy, compare and dump recurse, so a value nested a
//   million deep would overflow the stack later even though parsing itself is iterative.
// - Duplicate keys are rejected (nlohmann keeps the last one silently).
// - Every error is an sw::Error "[json] <where>: ..."; parser texts and values quoted in messages are
//   cut to kMaxQuotedChars so a crafted file cannot flood the terminal.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace sw {

inline constexpr size_t kMaxQuotedChars = 80;
// Every speedwins JSON nests well under this (a model config with a schedule list: 4 levels).
inline constexpr int kMaxJsonDepth = 32;

inline std::string cut_text(std::string s, size_t max = kMaxQuotedChars) {
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

// A JSON value as short printable text for messages: invalid UTF-8 replaced, cut to 80 characters.
// Values reaching here were depth-checked at parse time, so dump() cannot recurse too deep.
template <class Json>
std::string json_brief(const Json& j) {
  if (j.is_structured() && j.size() > 64) return j.is_array() ? "[... " + std::to_string(j.size()) + " items]" : "{...}";
  return cut_text(j.dump(-1, ' ', false, Json::error_handler_t::replace));
}

template <class Json = nlohmann::json>
Json parse_json_bounded(std::string_view text, const std::string& where, int max_depth = kMaxJsonDepth,
                        const char* op = "json") {
  std::vector<std::set<std::string>> keys;  // keys[d]: keys of the open object at depth d
  auto on_event = [&](int depth, typename Json::parse_event_t ev, Json& parsed) {
    using E = typename Json::parse_event_t;
    if (ev == E::object_start || ev == E::array_start) {
      if (depth >= max_depth)
        throw Error(str_cat("[", op, "] ", where, ": JSON nests deeper than ", max_depth, " levels (expected at most ",
                            max_depth, ")"));
      if (ev == E::object_start) {
        keys.resize(static_cast<size_t>(depth) + 1);
        keys.emplace_back();
      }
    } else if (ev == E::key && static_cast<size_t>(depth) < keys.size()) {
      const auto& k = parsed.template get_ref<const std::string&>();
      if (!keys[depth].insert(k).second)
        throw Error(str_cat("[", op, "] ", where, ": has the key ", json_brief(Json(k)),
                            " twice in one object (expected unique keys)"));
    }
    return true;
  };
  try {
    return Json::parse(text, on_event);
  } catch (const typename Json::exception& e) {
    throw Error(str_cat("[", op, "] ", where, ": not valid JSON (", cut_text(e.what()), ")"));
  }
}

// A JSON file larger than this is refused before it is read (configs are a few KiB).
inline constexpr size_t kMaxJsonFileBytes = size_t{64} << 20;

// Reads and parses a JSON file; messages name the path.
template <class Json = nlohmann::json>
Json read_json_file(const std::string& path, int max_depth = kMaxJsonDepth) {
  std::ifstream f(path, std::ios::binary);
  SW_CHECK(f.good(), "json", "cannot open ", path);
  std::string text;
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {  // bounded even for /dev/zero or a pipe
    text.append(buf, static_cast<size_t>(f.gcount()));
    SW_CHECK(text.size() <= kMaxJsonFileBytes, "json", path, ": larger than ", kMaxJsonFileBytes >> 20,
             " MiB (expected a JSON config of a few KiB)");
  }
  SW_CHECK(!f.bad(), "json", "cannot read ", path);
  return parse_json_bounded<Json>(text, path, max_depth);
}

}  // namespace sw
