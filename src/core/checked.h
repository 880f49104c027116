// Checked size arithmetic: the one place where element counts, byte sizes and offsets derived from
// untrusted input (configs, checkpoints, tensor shapes) are multiplied and added. An overflow is an
// sw::Error naming what was being computed, never a wrapped value that later under-allocates.
#pragma once

#include <cstdint>
#include <string>

#include "core/error.h"

namespace sw {

// The largest element count or byte size any tensor may have: 2^48 (256 TiB). Far above any machine,
// far below INT64_MAX, so sums of a few such sizes cannot overflow either.
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 48;

// a * b for non-negative sizes; throws "[op] what: a x b overflows ..." when the product exceeds
// `limit`.
inline int64_t checked_mul(int64_t a, int64_t b, const char* op, const std::string& what,
                           int64_t limit = INT64_MAX) {
  int64_t r;
  SW_CHECK(a >= 0 && b >= 0, op, what, ": negative size (", a, " x ", b, ")");
  SW_CHECK(!__builtin_mul_overflow(a, b, &r) && r <= limit, op, what, ": ", a, " x ", b, " exceeds the limit of ",
           limit);
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* op, const std::string& what,
                           int64_t limit = INT64_MAX) {
  int64_t r;
  SW_CHECK(a >= 0 && b >= 0, op, what, ": negative size (", a, " + ", b, ")");
  SW_CHECK(!__builtin_add_overflow(a, b, &r) && r <= limit, op, what, ": ", a, " + ", b, " exceeds the limit of ",
           limit);
  return r;
}

}  // namespace sw
