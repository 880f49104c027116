// Tokenizer file format (see tokenizer.h), its checked reader, and the byte tokenizer.
#include "io/tokenizer.h"

#include <charconv>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/sentencepiece_tokenizer.h"

namespace sw::io {
namespace {

constexpr std::string_view kMagic = "speedwins-tokenizer";
constexpr int kFormatVersion = 1;
// A header line longer than this is corruption, not a long type name.
constexpr size_t kMaxHeaderLine = 256;

// Walks the header of a tokenizer file, one "<field> <value>" line at a time, with errors that
// name the file, the field and what was expected.
class HeaderReader {
 public:
  HeaderReader(const std::string& path, const std::string& bytes) : path_(path), bytes_(bytes) {}

  std::string field(std::string_view name, std::string_view expected) {
    size_t nl = bytes_.find('\n', pos_);
    SW_CHECK(nl != std::string::npos && nl - pos_ <= kMaxHeaderLine, "tokenizer", "tokenizer file ", path_,
             ": field '", name, "': file ends or line runs on; expected a line '", name, " <", expected, ">'");
    std::string_view line(bytes_.data() + pos_, nl - pos_);
    SW_CHECK(line.size() > name.size() && line.substr(0, name.size()) == name && line[name.size()] == ' ',
             "tokenizer", "tokenizer file ", path_, ": field '", name, "': found '", printable(line),
             "', expected '", name, " <", expected, ">'");
    pos_ = nl + 1;
    return std::string(line.substr(name.size() + 1));
  }

  uint64_t number(std::string_view name, uint64_t max) {
    std::string v = field(name, "decimal number");
    uint64_t x = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    SW_CHECK(ec == std::errc() && end == v.data() + v.size() && !v.empty() && x <= max, "tokenizer",
             "tokenizer file ", path_, ": field '", name, "': found '", printable(v),
             "', expected a decimal number <= ", max);
    return x;
  }

  size_t pos() const { return pos_; }

 private:
  static std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
    return out;
  }

  const std::string& path_;
  const std::string& bytes_;
  size_t pos_ = 0;
};

}  // namespace

void Tokenizer::save(const std::string& path) const {
  std::string body = payload();
  write_file_atomic(path, [&](std::ostream& os) {
    os << kMagic << ' ' << kFormatVersion << '\n'
       << "type " << type() << '\n'
       << "payload_bytes " << body.size() << '\n';
    os.write(body.data(), static_cast<std::streamsize>(body.size()));
  });
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::string bytes = read_file(path);
  HeaderReader h(path, bytes);
  uint64_t version = h.number(kMagic, 1u << 20);
  SW_CHECK(version == kFormatVersion, "tokenizer", "tokenizer file ", path, ": field '", kMagic, "': version ",
           version, ", expected ", kFormatVersion);
  std::string type = h.field("type", "byte|sentencepiece");
  uint64_t n = h.number("payload_bytes", bytes.size());
  SW_CHECK(bytes.size() - h.pos() == n, "tokenizer", "tokenizer file ", path, ": field 'payload_bytes' says ", n,
           " bytes, but ", bytes.size() - h.pos(), " follow the header (truncated or trailing data)");
  std::string payload = bytes.substr(h.pos());

  if (type == "byte") {
    SW_CHECK(payload.empty(), "tokenizer", "tokenizer file ", path, ": field 'payload_bytes': ", n,
             ", expected 0 for type byte");
    return std::make_unique<ByteTokenizer>();
  }
  if (type == "sentencepiece") return SentencePieceTokenizer::from_serialized(std::move(payload), path);
  throw Error(str_cat("[tokenizer] tokenizer file ", path, ": field 'type': unknown type '", type,
                      "', expected byte or sentencepiece"));
}

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    SW_CHECK(id >= 0 && id < kVocab, "tokenizer", "byte tokenizer: id ", id, " at position ", i,
             " is out of range, expected [0, ", kVocab, ")");
    if (id < 256) out += static_cast<char>(id);
  }
  return out;
}

}  // namespace sw::io
