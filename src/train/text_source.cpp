#include "train/text_source.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "io/corpus.h"
#include "train/synthetic_text.h"

namespace sw::train {

std::string brown_corpus_path() {
  namespace fs = std::filesystem;
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("SW_DATA_DIR"); env && *env) dirs.emplace_back(env);
  dirs.emplace_back("data");
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {  // <repo>/build/speedwins -> <repo>/data
    exe[n] = 0;
    dirs.push_back(fs::path(exe).parent_path().parent_path() / "data");
  }
  for (const fs::path& d : dirs)
    if (fs::exists(d / "brown.txt")) return (d / "brown.txt").string();
  return "";
}

TextSource load_text_source(const std::string& data, int64_t synthetic_bytes, bool quiet) {
  if (data == "synthetic") return {synthetic_text(synthetic_bytes, 1), "synthetic"};
  if (data == "brown") {
    std::string path = brown_corpus_path();
    if (path.empty()) {
      if (!quiet)
        std::fprintf(stderr, "note: the Brown corpus (data/brown.txt) is missing: scripts/fetch_brown.sh fetches it; "
                             "using synthetic text instead\n");
      return {synthetic_text(synthetic_bytes, 1), "synthetic"};
    }
    return {io::load_text_corpus(path), "brown"};
  }
  return {io::load_text_corpus(data), data};
}

}  // namespace sw::train
