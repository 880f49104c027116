// Gradient checking against an f64 reference, usable on any op in one line:
//
//   EXPECT_TRUE(grad_check(op, ref, {x, w}).ok);
//
// The op runs in fp32 with autograd; its backward is seeded with a fixed random R, giving the
// analytic gradient of L = sum(op(x) * R). The numeric gradient is the central difference of the
// same L computed by the f64 reference, so the finite difference itself is accurate to ~1e-9 and
// the comparison measures only the fp32 kernel's backward. Inputs of dtype i32 (token ids,
// positions) are passed through and not differentiated.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace sw {

using OpFn = std::function<Variable(const std::vector<Variable>&)>;
using RefFn = std::function<std::vector<double>(const std::vector<std::vector<double>>&)>;

struct GradCheckOptions {
  double eps = 1e-6;   // f64 step: truncation ~eps^2, rounding ~1e-16/eps: both far below fp32 error
  double atol = 1e-4;  // fp32 backward vs f64: accumulated rounding ~ sqrt(reduction length) * 6e-8
  double rtol = 1e-3;
  uint64_t seed = 1234;
  std::vector<bool> wrt;  // which inputs to differentiate (default: every floating input)
};

struct GradCheckResult {
  bool ok = true;
  double max_abs_err = 0;
  std::string report;  // names the input, element and both values of the worst mismatch
};

GradCheckResult grad_check(const OpFn& op, const RefFn& ref, const std::vector<Tensor>& inputs,
                           const GradCheckOptions& opts = {});

}  // namespace sw
