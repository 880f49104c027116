// Atomic file replacement (temp + fsync + rename + directory fsync) and checked file reads, over
// POSIX file descriptors so that every failure has an errno to report.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <streambuf>
#include <vector>

#include "core/error.h"

namespace sw::io {
namespace {

std::string os_reason(int err) { return err ? std::strerror(err) : "stream error"; }

// An output streambuf over a file descriptor that remembers the first errno, so that a failed
// write (e.g. disk full) is reported with its reason instead of a bare badbit.
class FdStreamBuf : public std::streambuf {
 public:
  explicit FdStreamBuf(int fd) : fd_(fd), buf_(1 << 16) { setp(buf_.data(), buf_.data() + buf_.size()); }
  int error() const { return err_; }

 protected:
  int_type overflow(int_type c) override {
    if (!flush_buffer()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    // Large blocks (tensor data) go straight to the descriptor instead of through the buffer.
    if (n < static_cast<std::streamsize>(buf_.size())) return std::streambuf::xsputn(s, n);
    if (!flush_buffer() || !write_all(s, static_cast<size_t>(n))) return 0;
    return n;
  }
  int sync() override { return flush_buffer() ? 0 : -1; }

 private:
  bool flush_buffer() {
    size_t n = static_cast<size_t>(pptr() - pbase());
    setp(buf_.data(), buf_.data() + buf_.size());
    return write_all(buf_.data(), n);
  }
  bool write_all(const char* p, size_t n) {
    if (err_) return false;
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        err_ = errno;
        return false;
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  int fd_;
  int err_ = 0;
  std::vector<char> buf_;
};

// Removes the temporary file unless the rename went through.
struct TempFileGuard {
  std::string tmp;
  int fd = -1;
  bool committed = false;
  ~TempFileGuard() {
    if (fd >= 0) ::close(fd);
    if (!committed) ::unlink(tmp.c_str());
  }
};

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  SW_CHECK(!path.empty(), "io", "cannot write a file with an empty path");
  TempFileGuard g{path + ".tmp." + std::to_string(::getpid())};
  // Reads errno before anything else; its arguments are a literal and an existing string, so no
  // allocation runs between the failing call and that read.
  auto check_os = [&](bool ok, const char* step, const std::string& subject) {
    int err = errno;
    SW_CHECK(ok, "io", "cannot write ", path, ": ", step, " ", subject, " failed: ", os_reason(err));
  };
  // O_TRUNC, not O_EXCL: a leftover temp with our pid belongs to a dead process (or to us).
  g.fd = ::open(g.tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (g.fd < 0) g.committed = true;  // nothing was created, so nothing to remove
  check_os(g.fd >= 0, "creating temporary file", g.tmp);
  {
    FdStreamBuf buf(g.fd);
    std::ostream os(&buf);
    writer(os);
    os.flush();
    errno = buf.error();
    check_os(os.good() && buf.error() == 0, "writing", g.tmp);
  }
  check_os(::fsync(g.fd) == 0, "fsync of", g.tmp);
  int fd = g.fd;
  g.fd = -1;
  check_os(::close(fd) == 0, "closing", g.tmp);
  check_os(::rename(g.tmp.c_str(), path.c_str()) == 0, "renaming over it the temporary file", g.tmp);
  g.committed = true;

  // Makes the rename itself durable. Some filesystems cannot sync a directory (EINVAL): the new
  // content is complete either way, so that is not an error.
  std::string dir = parent_dir(path);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  check_os(dfd >= 0, "(new content in place) opening for sync the directory", dir);
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  errno = err;
  check_os(rc == 0 || err == EINVAL, "(new content in place) syncing the directory", dir);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, [&](std::ostream& os) { os.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

InputFile::InputFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  SW_CHECK(fd_ >= 0, "io", "cannot open ", path, ": ", os_reason(errno));
  struct stat st;
  int rc = ::fstat(fd_, &st);
  int err = errno;
  if (rc != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    SW_CHECK(rc == 0, "io", "cannot stat ", path, ": ", os_reason(err));
    SW_CHECK(false, "io", "cannot read ", path, ": expected a regular file, found ",
             S_ISDIR(st.st_mode) ? "a directory" : "a special file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void InputFile::read_at(uint64_t offset, void* dst, size_t n) const {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    SW_CHECK(r >= 0, "io", "reading ", path_, " at byte ", offset, " failed: ", os_reason(errno));
    SW_CHECK(r > 0, "io", "reading ", path_, ": file ends at byte ", offset, ", expected ", n,
             " more bytes (was it truncated while being read?)");
    p += r;
    offset += static_cast<uint64_t>(r);
    n -= static_cast<size_t>(r);
  }
}

std::string read_file(const std::string& path) {
  InputFile f(path);
  std::string s(static_cast<size_t>(f.size()), '\0');
  f.read_at(0, s.data(), s.size());
  return s;
}

}  // namespace sw::io
