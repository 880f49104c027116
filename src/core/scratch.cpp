#include "core/scratch.h"

#include <cstdlib>
#include <new>

#include "core/error.h"

namespace sw {
namespace {

struct ScratchSlot {
  void* ptr = nullptr;
  size_t bytes = 0;
  ~ScratchSlot() { std::free(ptr); }
};

thread_local ScratchSlot t_slots[kScratchSlots];

void* scratch_bytes(int slot, size_t bytes) {
  SW_ASSERT(slot >= 0 && slot < kScratchSlots);
  ScratchSlot& s = t_slots[slot];
  if (s.bytes < bytes) {
    std::free(s.ptr);
    size_t rounded = (bytes + 63) / 64 * 64;
    s.ptr = std::aligned_alloc(64, rounded);
    if (!s.ptr) throw std::bad_alloc();
    s.bytes = rounded;
  }
  return s.ptr;
}

}  // namespace

float* scratch_floats(int slot, size_t n) { return static_cast<float*>(scratch_bytes(slot, n * sizeof(float))); }
double* scratch_doubles(int slot, size_t n) { return static_cast<double*>(scratch_bytes(slot, n * sizeof(double))); }

}  // namespace sw
