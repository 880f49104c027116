// Which algorithm a scan kernel runs. Both give the same result up to fp32 rounding.
#pragma once

#include <cstdint>

namespace sw::kernels::scan {

enum class ScanForm : uint8_t {
  sequential,  // token loop carrying the state: least work, the default on CPU
  blelloch,    // work-efficient up-sweep/down-sweep over chunks of T, chunks chained by their state
};

}  // namespace sw::kernels::scan
