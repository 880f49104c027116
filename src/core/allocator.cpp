#include "core/allocator.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace sw {
namespace {
std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_allocs{0};

int64_t read_memory_limit() {
  if (const char* env = std::getenv("SW_MEMORY_LIMIT_MB")) {
    char* end = nullptr;
    long long mb = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && mb > 0 && mb < (int64_t{1} << 40)) return static_cast<int64_t>(mb) << 20;
  }
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return INT64_MAX / 4;  // unknown: no limit beyond the allocator's own
  return static_cast<int64_t>(pages) * page;
}
}  // namespace

int64_t memory_limit_bytes() {
  static const int64_t limit = read_memory_limit();
  return limit;
}

std::string format_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  char buf[48];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

void* tensor_alloc(size_t bytes) {
  SW_CHECK(bytes <= static_cast<size_t>(memory_limit_bytes()) &&
               g_live.load() + static_cast<int64_t>(bytes) <= memory_limit_bytes(),
           "memory", "a tensor of ", format_bytes(static_cast<int64_t>(bytes)), " would bring live tensor memory to ",
           format_bytes(g_live.load() + static_cast<int64_t>(bytes)), ", above this machine's ",
           format_bytes(memory_limit_bytes()), " of physical memory");
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  SW_CHECK(p, "memory", "out of memory allocating a tensor of ", format_bytes(static_cast<int64_t>(bytes)), " (",
           format_bytes(g_live.load()), " live)");
  int64_t live = g_live.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  int64_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  g_allocs.fetch_add(1);
  return p;
}

void tensor_free(void* p, size_t bytes) {
  if (!p) return;
  std::free(p);
  g_live.fetch_sub(static_cast<int64_t>(bytes));
}

MemoryStats memory_stats() { return {g_live.load(), g_peak.load(), g_allocs.load()}; }

void reset_peak_memory() { g_peak.store(g_live.load()); }

}  // namespace sw
