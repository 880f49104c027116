// For every registered tiny preset: prefill logits == step-by-step decode logits, and segments with
// the state carried == one pass. New architectures are covered as soon as their tiny preset exists.
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

// A sequence fed in segments (prefill 11 tokens, one decode step, then 20 tokens at once) with the
// state carried equals one stateless pass: the multi-token continuation paths (attention over a
// cache with new keys, chunked prefill from a carried recurrent state, the shared YOCO cache) agree
// with training's form. Same tolerance as above.
TEST_P(PrefillDecode, SegmentsMatchOnePass) {
  ModelConfig cfg = resolve_preset(GetParam());
  cfg.init_std = 0.2;
  EXPECT_TRUE(testing::segments_match_one_pass(cfg, {11, 1, 20}, 5e-5));
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
