// Tensor memory: 64-byte aligned blocks with live and peak byte accounting.
//
// Benchmarks read peak_bytes() to show, for example, that attention's training memory grows
// linearly in T. reset_peak() starts a new measurement window at the current live size.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sw {

void* tensor_alloc(size_t bytes);
void tensor_free(void* p, size_t bytes);

struct MemoryStats {
  int64_t live_bytes;
  int64_t peak_bytes;
  int64_t total_allocs;
};
MemoryStats memory_stats();
void reset_peak_memory();

}  // namespace sw
