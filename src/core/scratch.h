// Per-thread scratch memory for kernels.
//
// Kernels do not own tensors (DESIGN.md), but chunked and tiled algorithms need small working
// buffers (a tile of scores, a chunk's decay factors). scratch_floats(slot, n) returns a buffer of at
// least n floats that belongs to the calling thread; it grows but never shrinks, so after the first
// call of a given size it costs nothing. Different slots never alias, so one kernel may hold several.
// The contents are uninitialised. A buffer stays valid until the same thread asks for the same slot
// again. Slots 6 and 7 are used by the GEMM wrapper (operand conversion): kernels that call gemm
// must not hold them across the call.
#pragma once

#include <cstddef>

namespace sw {

constexpr int kScratchSlots = 8;
float* scratch_floats(int slot, size_t n);
double* scratch_doubles(int slot, size_t n);

}  // namespace sw
