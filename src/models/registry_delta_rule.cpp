// Registry table of the DeltaNet, Gated DeltaNet, RWKV-7 mixers: one line per architecture.
#include "models/registry.h"

namespace sw::models {

std::vector<MixerEntry> delta_rule_mixers() {
  return {
  };
}

}  // namespace sw::models
