// Whole-file reads and crash-safe whole-file writes.
//
// write_file_atomic writes to "<path>.tmp.<pid>" in the same directory, fsyncs it, renames it over
// <path> and fsyncs the directory, so a crash at any moment leaves either the old file or the new
// one, never a mix. Every failure throws sw::Error naming the path and the OS reason.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>

namespace sw::io {

// Streams the file's content through `writer`. If the writer throws, or any write, fsync or rename
// fails, the temporary file is removed, the previous <path> is left untouched and the error
// propagates (the writer's own exception unchanged, OS failures as sw::Error).
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);
void write_file_atomic(const std::string& path, std::string_view bytes);

// The whole file; a missing, unreadable or non-regular file throws sw::Error naming it.
std::string read_file(const std::string& path);

// A regular file opened for random-access reads, so large files can be read piecewise.
class InputFile {
 public:
  explicit InputFile(const std::string& path);  // throws sw::Error naming path and reason
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }  // as of opening
  // Reads exactly n bytes at offset; a short read (file shrank, I/O error) throws sw::Error.
  void read_at(uint64_t offset, void* dst, size_t n) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace sw::io
