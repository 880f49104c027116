// A synthetic English-like corpus for when the real one is missing (no network): sentences drawn
// from a small probabilistic grammar with agreement and recurring names, so that a language model
// has structure to learn (its loss falls well below that of uniform bytes) and runs are reproducible.
#pragma once

#include <cstdint>
#include <string>

namespace sw::train {

std::string synthetic_text(int64_t n_bytes, uint64_t seed);

}  // namespace sw::train
