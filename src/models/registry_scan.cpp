// Registry table of the Mamba (selective scan), HGRN, TTT-Linear mixers: one line per architecture.
#include "models/registry.h"
#include "nn/scan/hgrn.h"
#include "nn/scan/mamba.h"
#include "nn/scan/ttt_linear.h"

namespace sw::models {

std::vector<MixerEntry> scan_mixers() {
  return {
      make_mixer_entry<nn::MambaConfig, nn::Mamba>("mamba", "ssm"),
      make_mixer_entry<nn::TttLinearConfig, nn::TttLinear>("ttt-linear", "linear"),
      make_mixer_entry<nn::HgrnConfig, nn::Hgrn>("hgrn", "linear"),
  };
}

}  // namespace sw::models
