// Wall-clock timing for benchmarks and progress lines.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace sw {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs f once to warm up, then in trials until min_seconds have passed (at least min_trials);
// returns the median seconds per call, which resists the outliers of a shared 2-core machine.
template <class F>
double time_median(F&& f, double min_seconds = 0.25, int min_trials = 5) {
  f();
  std::vector<double> t;
  double start = now_seconds();
  while (static_cast<int>(t.size()) < min_trials || now_seconds() - start < min_seconds) {
    double t0 = now_seconds();
    f();
    t.push_back(now_seconds() - t0);
    if (t.size() >= 1000) break;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace sw
