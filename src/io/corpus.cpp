// Text corpus loading: files and folders, with the checks of corpus.h.
#include "io/corpus.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"

namespace sw::io {
namespace fs = std::filesystem;

bool looks_binary(const std::string& bytes) {
  if (bytes.find('\0') != std::string::npos) return true;
  size_t n = std::min<size_t>(bytes.size(), 64 * 1024), control = 0;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c == 0x7f) ++control;
  }
  return control * 10 > n;
}

std::string load_text_corpus(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  SW_CHECK(!path.empty() && fs::exists(st), "corpus", "corpus path '", path,
           "' does not exist (expected a text file or a folder of text files)");
  if (!fs::is_directory(st)) {
    std::string text = read_file(path);
    SW_CHECK(!text.empty(), "corpus", "corpus file ", path, " is empty (expected text)");
    SW_CHECK(!looks_binary(text), "corpus", "corpus file ", path,
             " looks binary (NUL bytes or many control characters; expected plain text)");
    return text;
  }

  std::vector<fs::path> files;
  fs::directory_iterator it(path, ec);
  SW_CHECK(!ec, "corpus", "cannot list corpus folder ", path, ": ", ec.message());
  // increment(ec) rather than a range-for, whose errors would escape as std::filesystem_error.
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    SW_CHECK(!ec, "corpus", "cannot list corpus folder ", path, ": ", ec.message());
    std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // hidden files, editor droppings
    std::error_code fec;
    if (it->is_regular_file(fec)) files.push_back(it->path());
  }
  SW_CHECK(!ec, "corpus", "cannot list corpus folder ", path, ": ", ec.message());
  std::sort(files.begin(), files.end());

  std::string text;
  size_t used = 0;
  for (const fs::path& f : files) {
    std::string part = read_file(f.string());
    if (part.empty()) continue;
    if (looks_binary(part)) {
      std::fprintf(stderr, "speedwins: corpus: skipping %s (looks binary, expected plain text)\n", f.c_str());
      continue;
    }
    if (used++) text += '\n';
    text += part;
  }
  SW_CHECK(!text.empty(), "corpus", "corpus folder ", path, " has no usable text (", files.size(),
           " regular files, all empty or binary; expected at least one non-empty text file)");
  return text;
}

}  // namespace sw::io
