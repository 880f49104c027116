// For every registered tiny preset: prefill logits == step-by-step decode logits. New architectures
// are covered as soon as their tiny preset exists.
#include "models/model_testing.h"
#include "models/presets.h"

namespace sw::models {
namespace {

class PrefillDecode : public ::testing::TestWithParam<std::string> {};

TEST_P(PrefillDecode, LogitsMatch) {
  ModelConfig cfg = resolve_preset(GetParam());
  cfg.init_std = 0.2;  // sharper attention patterns and larger states than at init
  // fp32 throughout; the two forms sum in different orders (tiles/chunks vs single steps):
  // ~1e-6 relative on logits of size ~1, so 5e-5 absolute.
  EXPECT_TRUE(testing::prefill_matches_decode(cfg, 5e-5));
}

INSTANTIATE_TEST_SUITE_P(TinyPresets, PrefillDecode, ::testing::ValuesIn(preset_names("tiny")),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param;
                           for (char& c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

}  // namespace
}  // namespace sw::models
