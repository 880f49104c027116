// Cheap wall-time accumulators for the parts of a step that benchmarks report separately (e.g. the
// share of decode time spent attending over the KV cache). Off the hot path: one clock read per call.
#pragma once

namespace sw::nn {

enum class ProfileSlot { attention_decode, count };

void profile_add(ProfileSlot slot, double seconds);
double profile_seconds(ProfileSlot slot);
void profile_reset();

}  // namespace sw::nn
