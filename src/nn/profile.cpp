#include "nn/profile.h"

#include <atomic>

namespace sw::nn {
namespace {
std::atomic<double> g_seconds[static_cast<int>(ProfileSlot::count)];
}

void profile_add(ProfileSlot slot, double seconds) {
  std::atomic<double>& a = g_seconds[static_cast<int>(slot)];
  double cur = a.load();
  while (!a.compare_exchange_weak(cur, cur + seconds)) {
  }
}
double profile_seconds(ProfileSlot slot) { return g_seconds[static_cast<int>(slot)].load(); }
void profile_reset() {
  for (auto& a : g_seconds) a.store(0);
}

}  // namespace sw::nn
