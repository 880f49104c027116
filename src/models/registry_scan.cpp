// Registry table of the Mamba (selective scan), HGRN, TTT-Linear mixers: one line per architecture.
#include "models/registry.h"

namespace sw::models {

std::vector<MixerEntry> scan_mixers() {
  return {
  };
}

}  // namespace sw::models
