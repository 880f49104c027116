// Tensor memory: 64-byte aligned blocks with live and peak byte accounting.
//
// Benchmarks read peak_bytes() to show, for example, that attention's training memory grows
// linearly in T. reset_peak() starts a new measurement window at the current live size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sw {

// Throws sw::Error (never std::bad_alloc) when the block cannot be had, or when it would bring live
// tensor memory above memory_limit_bytes(): past that the kernel would OOM-kill the process later.
void* tensor_alloc(size_t bytes);
void tensor_free(void* p, size_t bytes);

struct MemoryStats {
  int64_t live_bytes;
  int64_t peak_bytes;
  int64_t total_allocs;
};
MemoryStats memory_stats();
void reset_peak_memory();

// The machine's physical memory (sysconf), or the SW_MEMORY_LIMIT_MB environment variable when set
// (tests and shared machines). Tensor memory above this is refused; admission checks compare
// estimates with it before a model is built.
int64_t memory_limit_bytes();
std::string format_bytes(int64_t bytes);  // "1.5 GiB"

}  // namespace sw
