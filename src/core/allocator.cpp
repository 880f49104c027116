#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace sw {
namespace {
std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_allocs{0};
}  // namespace

void* tensor_alloc(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
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
