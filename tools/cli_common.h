// Shared by the CLI subcommands: finding the text corpus and the tokenizer, turning text into a
// token dataset.
#pragma once

#include <memory>
#include <string>

#include "io/tokenizer.h"
#include "train/data.h"

namespace sw::tools {

struct TextSource {
  std::string text;
  std::string name;  // "brown", "synthetic" or the path
};

// data: "brown" (data/brown.txt under $SW_DATA_DIR or ./data, falling back to synthetic text with a
// message when it is missing), "synthetic", or a file/folder path.
TextSource load_text(const std::string& data, int64_t synthetic_bytes = 4 << 20);

// tokenizer: "byte", or a path to a tokenizer file written by `speedwins tokenizer train`.
std::unique_ptr<io::Tokenizer> make_tokenizer(const std::string& spec);

struct EncodedText {
  std::vector<int32_t> tokens;
  double bytes_per_token = 1.0;
};
EncodedText encode_text(const io::Tokenizer& tok, const std::string& text);

}  // namespace sw::tools
