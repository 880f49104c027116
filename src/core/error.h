// Errors and invariants.
//
// User-facing validation throws sw::Error whose message opens with "[op] " and names the offending
// shapes, fields or files. Internal invariants use SW_ASSERT (always on: aborts with file and line);
// SW_DASSERT is compiled only into debug builds so hot loops can check bounds at no release cost.
// Kernels never throw.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace sw {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void fmt_into(std::ostringstream&) {}
template <class T, class... Rest>
void fmt_into(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  fmt_into(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into a string.
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::fmt_into(os, args...);
  return os.str();
}

[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "speedwins: internal invariant failed: %s at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace sw

// SW_CHECK(cond, "op", parts...) throws sw::Error("[op] parts...") when cond is false.
#define SW_CHECK(cond, op, ...)                                        \
  do {                                                                 \
    if (!(cond)) throw ::sw::Error(::sw::str_cat("[", op, "] ", __VA_ARGS__)); \
  } while (0)

#define SW_ASSERT(cond)                                              \
  do {                                                               \
    if (!(cond)) ::sw::assert_fail(#cond, __FILE__, __LINE__);       \
  } while (0)

#ifdef NDEBUG
#define SW_DASSERT(cond) ((void)0)
#else
#define SW_DASSERT(cond) SW_ASSERT(cond)
#endif
