// safetensors writer and validating reader. The reader parses the header, validates every entry
// and the layout of the data buffer (in bounds, no overlaps, no gaps, no trailing bytes, as the
// reference implementation requires), and only then allocates tensors and reads their bytes.
#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "core/bounded_json.h"
#include "io/atomic_file.h"

namespace sw::io {
namespace {

// Tensor bytes are copied as they lie in memory, and the format is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

using Json = nlohmann::ordered_json;  // keeps the header's key order: tensors come back in file order

constexpr const char* kOp = "safetensors";
constexpr int kMaxHeaderDepth = 16;  // a valid header nests 3 deep; this stops pathological nesting early

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {{"F32", DType::f32}, {"BF16", DType::bf16}, {"F64", DType::f64}, {"I32", DType::i32}};

template <class... Parts>
[[noreturn]] void fail(const std::string& label, const Parts&... parts) {
  throw Error(str_cat("[", kOp, "] ", label, ": ", parts...));
}

std::string cut(std::string s) { return cut_text(std::move(s)); }
// JSON text of a value, invalid UTF-8 replaced, so messages stay printable and short.
std::string brief(const Json& j) { return json_brief(j); }
std::string quoted(const std::string& s) { return brief(Json(s)); }

// Random-access bytes: a file or a buffer in memory.
struct Source {
  std::string label;
  uint64_t size;
  std::function<void(uint64_t offset, void* dst, size_t n)> read;
};

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

Json parse_header(const std::string& text, const std::string& label) {
  // Depth-limited and duplicate keys rejected (they would silently shadow each other).
  return parse_json_bounded<Json>(text, label, kMaxHeaderDepth, kOp);
}

// A non-negative integer that fits int64_t (so also in Shape and in uint64 offsets).
bool as_count(const Json& j, uint64_t* out) {
  if (!j.is_number_integer()) return false;
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return *out <= static_cast<uint64_t>(INT64_MAX);
  }
  int64_t v = j.get<int64_t>();
  *out = static_cast<uint64_t>(v);
  return v >= 0;
}

Entry parse_entry(const std::string& label, const std::string& name, const Json& v, uint64_t buffer_size) {
  const std::string where = "tensor " + quoted(name);
  if (!v.is_object()) fail(label, where, " is ", brief(v), "; expected an object with dtype, shape, data_offsets");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) fail(label, where, ": missing field \"", field, "\"");

  Entry e{name, DType::f32, {}, 0, 0};
  const Json& dt = v["dtype"];
  const DTypeName* known = nullptr;
  if (dt.is_string())
    for (const auto& d : kDTypes)
      if (dt.get_ref<const std::string&>() == d.name) known = &d;
  if (!known) fail(label, where, ": \"dtype\" is ", brief(dt), "; expected one of \"F32\", \"BF16\", \"F64\", \"I32\"");
  e.dtype = known->dtype;

  const Json& sh = v["shape"];
  if (!sh.is_array()) fail(label, where, ": \"shape\" is ", brief(sh), "; expected an array of non-negative integers");
  // Product in uint64 with an overflow check: a bogus huge shape must not wrap around to match the range.
  uint64_t bytes = dtype_size(e.dtype);
  bool overflow = false;
  for (size_t i = 0; i < sh.size(); ++i) {
    uint64_t d;
    if (!as_count(sh[i], &d))
      fail(label, where, ": \"shape\"[", i, "] is ", brief(sh[i]), "; expected a non-negative integer below 2^63");
    e.shape.push_back(static_cast<int64_t>(d));
    overflow = overflow || __builtin_mul_overflow(bytes, d, &bytes);
  }

  const Json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !as_count(off[0], &e.begin) || !as_count(off[1], &e.end))
    fail(label, where, ": \"data_offsets\" is ", brief(off), "; expected [begin, end], two non-negative integers");
  if (e.begin > e.end) fail(label, where, ": \"data_offsets\" ", brief(off), " has begin after end");
  if (e.end > buffer_size)
    fail(label, where, ": \"data_offsets\" ", brief(off), " run past the end of the ", buffer_size,
         "-byte data buffer");
  if (overflow || bytes != e.end - e.begin)
    fail(label, where, ": shape ", shape_str(e.shape), " of ", known->name, " needs ",
         overflow ? std::string("more than 2^64") : std::to_string(bytes), " bytes but \"data_offsets\" ", brief(off),
         " span ", e.end - e.begin);
  return e;
}

Metadata parse_metadata(const std::string& label, const Json& m) {
  if (!m.is_object()) fail(label, "\"__metadata__\" is ", brief(m), "; expected an object of string values");
  Metadata out;
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string())
      fail(label, "\"__metadata__\" key ", quoted(k), " is ", brief(v), "; expected a string value");
    out[k] = v.get<std::string>();
  }
  return out;
}

// The data buffer must be tiled exactly: sorted by offset, each tensor starts where the last ended.
void check_layout(const std::string& label, std::vector<Entry>& entries, uint64_t buffer_size) {
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t covered = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < covered)
      fail(label, "tensor ", quoted(e.name), " bytes [", e.begin, ", ", e.end, ") overlap tensor ", quoted(prev->name),
           " bytes [", prev->begin, ", ", prev->end, "); expected disjoint ranges");
    if (e.begin > covered)
      fail(label, "data bytes [", covered, ", ", e.begin, ") before tensor ", quoted(e.name),
           " belong to no tensor; expected tensors packed without gaps");
    covered = e.end;
    prev = &e;
  }
  if (covered != buffer_size)
    fail(label, "the data buffer is ", buffer_size, " bytes but the tensors cover only ", covered,
         "; expected no trailing bytes");
}

SafetensorsFile load(const Source& src) {
  const std::string& label = src.label;
  if (src.size < 8) fail(label, "file is ", src.size, " bytes, shorter than the 8-byte header length field");
  unsigned char len[8];
  src.read(0, len, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > kMaxSafetensorsHeader)
    fail(label, "header length ", n, " exceeds the ", kMaxSafetensorsHeader, "-byte limit (corrupt or not a safetensors file)");
  if (n > src.size - 8)
    fail(label, "header length ", n, " runs past the end of the file (", src.size - 8, " bytes follow the length field)");

  std::string text(n, '\0');
  src.read(8, text.data(), n);
  Json header = parse_header(text, label);
  if (!header.is_object()) fail(label, "header is a JSON ", header.type_name(), "; expected a JSON object");

  SafetensorsFile out;
  out.path = label;
  out.header_bytes = n;
  const uint64_t base = 8 + n, buffer_size = src.size - base;
  std::vector<Entry> entries;
  for (const auto& [k, v] : header.items()) {
    if (k == "__metadata__")
      out.metadata = parse_metadata(label, v);
    else
      entries.push_back(parse_entry(label, k, v, buffer_size));
  }
  check_layout(label, entries, buffer_size);

  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (t.nbytes() > 0) src.read(base + e.begin, t.raw_data(), t.nbytes());
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace

const char* safetensors_dtype(DType t) {
  for (const auto& d : kDTypes)
    if (d.dtype == t) return d.name;
  return "?";
}

bool SafetensorsFile::contains(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return true;
  return false;
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  fail(path, "no tensor named ", quoted(name), " (the file holds ", tensors.size(), " tensors)");
}

namespace {

void write_impl(std::ostream& os, const NamedTensors& tensors, const Metadata& metadata, const std::string& label) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) fail(label, "cannot save tensor ", quoted(name), ": it is undefined (no storage)");
    if (name == "__metadata__") fail(label, "cannot save a tensor named \"__metadata__\": the format reserves that key");
    if (!seen.insert(name).second) fail(label, "cannot save two tensors named ", quoted(name));
    Json e = Json::object();
    e["dtype"] = safetensors_dtype(t.dtype());
    e["shape"] = t.shape();
    e["data_offsets"] = Json::array({offset, offset + t.nbytes()});
    header[name] = std::move(e);
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {
    fail(label, "cannot save: a tensor name or metadata string is not valid UTF-8 (", cut(e.what()), ")");
  }
  // Spaces after the JSON are allowed by the format; they put the data at an 8-byte-aligned offset.
  text.resize((text.size() + 7) / 8 * 8, ' ');

  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  os.write(reinterpret_cast<const char*>(len), 8);
  os.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors) {
    Tensor c = t.contiguous();
    os.write(static_cast<const char*>(c.raw_data()), static_cast<std::streamsize>(c.nbytes()));
  }
}

}  // namespace

void write_safetensors(std::ostream& os, const NamedTensors& tensors, const Metadata& metadata) {
  write_impl(os, tensors, metadata, "<stream>");
}

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  write_file_atomic(path, [&](std::ostream& os) { write_impl(os, tensors, metadata, path); });
}

SafetensorsFile load_safetensors(const std::string& path) {
  InputFile f(path);
  return load(Source{path, f.size(), [&](uint64_t off, void* dst, size_t n) { f.read_at(off, dst, n); }});
}

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& label) {
  // Callers only read inside [0, size): load() checks every range against size first.
  return load(Source{label, bytes.size(), [&](uint64_t off, void* dst, size_t n) {
                       SW_ASSERT(off <= bytes.size() && n <= bytes.size() - off);
                       std::memcpy(dst, bytes.data() + off, n);
                     }});
}

}  // namespace sw::io
