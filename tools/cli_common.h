// Shared by the CLI subcommands: finding the text corpus and the tokenizer, turning text into a
// token dataset.
#pragma once

#include <memory>
#include <string>

#include "io/tokenizer.h"
#include "train/data.h"
#include "train/text_source.h"

namespace sw::tools {


// tokenizer: "byte", or a path to a tokenizer file written by `speedwins tokenizer train`.
std::unique_ptr<io::Tokenizer> make_tokenizer(const std::string& spec);

struct EncodedText {
  std::vector<int32_t> tokens;
  double bytes_per_token = 1.0;
};
EncodedText encode_text(const io::Tokenizer& tok, const std::string& text);

}  // namespace sw::tools
