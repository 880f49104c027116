// Registry table of the DeltaNet, Gated DeltaNet, RWKV-7 mixers: one line per architecture.
#include "models/registry.h"
#include "nn/delta_rule/deltanet.h"
#include "nn/delta_rule/gated_deltanet.h"
#include "nn/delta_rule/rwkv7.h"

namespace sw::models {

std::vector<MixerEntry> delta_rule_mixers() {
  return {
      make_mixer_entry<nn::DeltaNetConfig, nn::DeltaNet>("deltanet", "linear"),
      make_mixer_entry<nn::GatedDeltaNetConfig, nn::GatedDeltaNet>("gated-deltanet", "linear"),
      make_mixer_entry<nn::Rwkv7Config, nn::Rwkv7>("rwkv7", "linear"),
  };
}

}  // namespace sw::models
