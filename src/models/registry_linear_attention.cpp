// Registry table of the linear attention, RetNet, GLA, HGRN2, Mamba2 (SSD), RWKV-6 mixers: one line per architecture.
#include "models/registry.h"
#include "nn/linear_attention/gla.h"
#include "nn/linear_attention/hgrn2.h"
#include "nn/linear_attention/lightning.h"
#include "nn/linear_attention/linear_attn.h"
#include "nn/linear_attention/mamba2.h"
#include "nn/linear_attention/retnet.h"
#include "nn/linear_attention/rwkv6.h"

namespace sw::models {

std::vector<MixerEntry> linear_attention_mixers() {
  return {
      make_mixer_entry<nn::LinearAttentionConfig, nn::LinearAttention>("linear-attn", "linear"),
      make_mixer_entry<nn::RetNetConfig, nn::MultiScaleRetention>("retnet", "linear"),
      make_mixer_entry<nn::GlaConfig, nn::GatedLinearAttention>("gla", "linear"),
      make_mixer_entry<nn::Hgrn2Config, nn::Hgrn2>("hgrn2", "linear"),
      make_mixer_entry<nn::Mamba2Config, nn::Mamba2>("mamba2", "ssm"),
      make_mixer_entry<nn::Rwkv6Config, nn::Rwkv6>("rwkv6", "linear"),
      make_mixer_entry<nn::LightningConfig, nn::LightningAttention>("lightning", "linear"),
  };
}

}  // namespace sw::models
