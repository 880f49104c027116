// Where the training text comes from: "brown" (the Brown corpus fetched by scripts/fetch_brown.sh;
// synthetic text with a note when it is missing), "synthetic", or a file/folder path.
#pragma once

#include <cstdint>
#include <string>

namespace sw::train {

struct TextSource {
  std::string text;
  std::string name;  // "brown", "synthetic" or the path
};

// brown.txt is looked for in $SW_DATA_DIR, ./data, and data/ beside the repository of the binary.
TextSource load_text_source(const std::string& data, int64_t synthetic_bytes = 4 << 20, bool quiet = false);
std::string brown_corpus_path();  // "" when not found

}  // namespace sw::train
