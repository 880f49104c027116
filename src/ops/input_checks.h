// Argument checks shared by the sequence ops (linear attention, delta rule, Lightning): inputs must
// be defined f32 tensors of the expected shape; errors name the op and the argument.
#pragma once

#include "core/tensor.h"

namespace sw::ops::detail {

// The input as a contiguous f32 tensor, or an error naming `op` and `name`.
inline Tensor f32_input(const Tensor& t, const char* op, const char* name) {
  SW_CHECK(t.defined(), op, name, " is undefined");
  SW_CHECK(t.dtype() == DType::f32, op, name, " must be f32, got ", t.describe());
  return t.contiguous();
}

inline void expect_shape(const Tensor& t, const Shape& s, const char* op, const char* name) {
  SW_CHECK(t.shape() == s, op, name, " must be f32", shape_str(s), ", got ", t.describe());
}

}  // namespace sw::ops::detail
