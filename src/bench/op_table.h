// The op table: one declaration per op case drives three modes (ggml's test-backend-ops idea).
//   check: the fp32 op against its f64 reference (kernels/ref), at a tolerance stated per case;
//   grad:  the op's backward against central differences of the f64 reference (autograd/gradcheck);
//   perf:  time per call with the case's FLOP and byte counts, as GFLOP/s and GB/s.
// Adding an op means adding a case here; the tests and `speedwins bench --ops` pick it up.
#pragma once

#include <string>
#include <vector>

#include "autograd/gradcheck.h"

namespace sw::bench {

struct OpCase {
  std::string name;  // "rmsnorm[64x96]"
  std::vector<Tensor> inputs;
  OpFn op;
  RefFn ref;
  double atol = 1e-5, rtol = 1e-5;  // check-mode tolerance (why: see the case)
  bool has_grad = true;
  GradCheckOptions grad;
  double flops = 0, bytes = 0;  // per call, for perf mode
};

// size 0: small shapes for check and grad; size 1: realistic shapes for perf.
std::vector<OpCase> op_cases(int size);

struct CheckResult {
  bool ok;
  double max_abs_err;
  std::string report;
};
CheckResult run_check(const OpCase& c);
GradCheckResult run_grad(const OpCase& c);

struct PerfResult {
  double seconds_fwd = 0, seconds_fwd_bwd = 0;
  double gflops = 0, gbs = 0;  // forward
};
PerfResult run_perf(const OpCase& c, double min_seconds = 0.2);

}  // namespace sw::bench
