// Presets at full size (slow: building a 100M-parameter model initialises 100M weights).
#include "models/language_model.h"
#include "models/presets.h"
#include "testing.h"

namespace sw::models {
namespace {

TEST(Transformer, Preset100mHasOneHundredMillionParameters) {
  ModelConfig cfg = resolve_preset("transformer-100m");
  EXPECT_EQ(cfg.d_model, 768);
  LanguageModel m(cfg);
  // 12 x (attention 1.57M + FFN 4.72M) + tied embedding 24.6M = 100.1M
  EXPECT_NEAR(static_cast<double>(m.num_parameters()), 100.1e6, 0.2e6);
}

}  // namespace
}  // namespace sw::models
