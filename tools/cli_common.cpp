#include "tools/cli_common.h"


namespace sw::tools {

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
