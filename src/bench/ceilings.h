// The machine's own ceilings, measured in the same run as the workloads they normalise:
// GEMM throughput (through our wrapper, beside oneDNN called directly) and memory bandwidth.
// MFU = achieved FLOP/s / GEMM ceiling; MBU = achieved bytes/s / bandwidth ceiling.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace sw::bench {

struct GemmPoint {
  int64_t m, n, k;
  DType dtype;
  double wrapper_gflops = 0, direct_gflops = 0;
};

struct Ceilings {
  std::vector<GemmPoint> gemm;
  double f32_gflops = 0;   // best wrapper fp32 GEMM rate over the large shapes
  double bf16_gflops = 0;  // best wrapper bf16 GEMM rate over the large shapes
  double triad_gbs = 0;    // STREAM triad a = b + s*c, 3 arrays counted
  double read_gbs = 0;     // streaming read (sum), the pattern of decoding weights/state
  int threads = 0;
};

// quick: fewer repetitions (tests); the shapes are the same.
Ceilings measure_ceilings(bool quick = false);
std::vector<GemmPoint> gemm_table(bool quick);
void measure_bandwidth(Ceilings& c, bool quick);
nlohmann::json to_json(const Ceilings& c);
std::string format_table(const Ceilings& c);

}  // namespace sw::bench
