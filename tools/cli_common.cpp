#include "tools/cli_common.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "io/corpus.h"
#include "train/synthetic_text.h"

namespace sw::tools {

TextSource load_text(const std::string& data, int64_t synthetic_bytes) {
  if (data == "synthetic") return {train::synthetic_text(synthetic_bytes, 1), "synthetic"};
  if (data == "brown") {
    const char* env = std::getenv("SW_DATA_DIR");
    std::string path = std::string(env && *env ? env : "data") + "/brown.txt";
    if (!std::filesystem::exists(path)) {
      std::fprintf(stderr,
                   "note: %s not found (run scripts/fetch_brown.sh to fetch the Brown corpus); using synthetic "
                   "text instead\n",
                   path.c_str());
      return {train::synthetic_text(synthetic_bytes, 1), "synthetic"};
    }
    return {io::load_text_corpus(path), "brown"};
  }
  return {io::load_text_corpus(data), data};
}

std::unique_ptr<io::Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<io::ByteTokenizer>();
  return io::load_tokenizer(spec);
}

EncodedText encode_text(const io::Tokenizer& tok, const std::string& text) {
  EncodedText e;
  e.tokens = tok.encode(text);
  SW_CHECK(!e.tokens.empty(), "data", "the text encodes to no tokens");
  e.bytes_per_token = static_cast<double>(text.size()) / static_cast<double>(e.tokens.size());
  return e;
}

}  // namespace sw::tools
