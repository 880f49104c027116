#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace sw::train {

double learning_rate(const ScheduleConfig& s, int64_t step, int64_t total_steps) {
  SW_CHECK(s.type == "cosine" || s.type == "wsd" || s.type == "constant", "schedule",
           "type must be cosine, wsd or constant, got '", s.type, "'");
  if (s.warmup_steps > 0 && step < s.warmup_steps) return s.lr * static_cast<double>(step + 1) / s.warmup_steps;
  if (s.type == "constant") return s.lr;
  double floor = s.lr * s.min_lr_ratio;
  int64_t after = std::max<int64_t>(1, total_steps - s.warmup_steps);
  double progress = std::clamp(static_cast<double>(step - s.warmup_steps) / after, 0.0, 1.0);
  if (s.type == "cosine") return floor + 0.5 * (s.lr - floor) * (1.0 + std::cos(M_PI * progress));
  // wsd: hold the peak, then decay linearly over the last decay_fraction of the steps.
  double start = 1.0 - s.decay_fraction;
  if (progress <= start) return s.lr;
  return s.lr + (floor - s.lr) * (progress - start) / std::max(1e-12, s.decay_fraction);
}

}  // namespace sw::train
