// Learning-rate schedules: warmup then cosine decay, warmup-stable-decay (WSD), or constant.
#pragma once

#include <string>

namespace sw::train {

struct ScheduleConfig {
  std::string type = "cosine";  // cosine | wsd | constant
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  // final lr = lr * min_lr_ratio (cosine, wsd)
  int64_t warmup_steps = 50;
  double decay_fraction = 0.2;  // wsd: the last fraction of steps decays linearly

  template <class V>
  void visit(V& v) {
    v("type", type, "cosine, wsd or constant");
    v("lr", lr, "peak learning rate");
    v("min_lr_ratio", min_lr_ratio, "final learning rate as a fraction of the peak");
    v("warmup_steps", warmup_steps, "linear warmup steps");
    v("decay_fraction", decay_fraction, "wsd: fraction of steps in the final decay");
  }
};

// Learning rate at step (0-based) of total_steps.
double learning_rate(const ScheduleConfig& s, int64_t step, int64_t total_steps);

}  // namespace sw::train
