// Sparse attention in a model (issue 12): every static pattern and MoBA from a config decodes as it
// prefills (KV cache, one layout row per new query), MoBA with blocks covering the sequence (or top-k
// covering every block) is exactly full causal attention, and bad sparse fields are refused with an
// error naming the field. The kernel-level agreement with f64 masked attention (forward and
// gradients) is tests/kernels/sparse_attention_test.cpp.
#include <gtest/gtest.h>

#include <string>

#include "models/model_testing.h"
#include "models/presets.h"
#include "models/registry.h"

namespace sw::models {
namespace {

ModelConfig tiny_with(const nlohmann::json& fields) {
  ModelConfig cfg = resolve_preset("transformer-tiny");
  for (auto it = fields.begin(); it != fields.end(); ++it) cfg.mixer[it.key()] = it.value();
  cfg.init_std = 0.2;  // sharp attention: a wrong mask or selection shows
  return cfg;
}

// Same tolerance as tests/models/prefill_decode_test.cpp: fp32 forms summing in different orders,
// ~1e-6 relative on logits of size ~1, so 5e-5 absolute.
constexpr double kLogitsAtol = 5e-5;

TEST(SparseLayers, EveryPatternDecodesAsItPrefills) {
  const std::vector<nlohmann::json> cases = {
      {{"sparse_pattern", "longformer"}, {"sparse_block", 4}, {"sparse_local", 2}, {"sparse_global", 1}},
      {{"sparse_pattern", "bigbird"}, {"sparse_block", 4}, {"sparse_local", 2}, {"sparse_global", 1},
       {"sparse_random", 2}, {"sparse_seed", 7}},
      {{"sparse_pattern", "dilated"}, {"sparse_block", 4}, {"sparse_segments", "2,8"}, {"sparse_dilations", "1,2"}},
      {{"sparse_pattern", "strided"}, {"sparse_block", 4}, {"sparse_stride", 3}},
      {{"sparse_pattern", "fixed"}, {"sparse_block", 4}, {"sparse_stride", 3}, {"sparse_summary", 1}},
      {{"moba_block", 4}, {"moba_topk", 2}},
      {{"moba_block", 6}, {"moba_topk", 1}},
  };
  for (const nlohmann::json& c : cases) {
    SCOPED_TRACE(c.dump());
    const ModelConfig cfg = tiny_with(c);
    EXPECT_TRUE(testing::prefill_matches_decode(cfg, kLogitsAtol));
    EXPECT_TRUE(testing::segments_match_one_pass(cfg, {11, 1, 20}, kLogitsAtol));
  }
}

// MoBA adds no parameters and draws nothing from the init generator, so a MoBA model and the dense
// one share their weights; with one block over the whole sequence, or top-k >= the number of
// blocks, every query sees all earlier keys: the logits are the dense model's.
TEST(SparseLayers, MobaCoveringEverythingIsFullAttention) {
  const ModelConfig dense = tiny_with(nlohmann::json::object());
  NoGradGuard g;
  const Tensor ids = testing::random_ids(2, 40, dense.vocab_size, 11);
  LanguageModel md(dense);
  const std::vector<float> ref = md.hidden(ids).data().to_floats();
  for (const nlohmann::json& c : {nlohmann::json{{"moba_block", 64}, {"moba_topk", 1}},
                                  nlohmann::json{{"moba_block", 4}, {"moba_topk", 10}}}) {
    SCOPED_TRACE(c.dump());
    LanguageModel mm(tiny_with(c));
    // Same kernel, a layout listing every causal block: agreement to fp32 rounding of tile order.
    EXPECT_TRUE(testing::all_close(mm.hidden(ids).data().to_floats(), ref, 1e-5, 1e-5));
  }
  // And a selective MoBA is not (the test can tell the difference).
  LanguageModel ms(tiny_with({{"moba_block", 4}, {"moba_topk", 2}}));
  EXPECT_FALSE(testing::all_close(ms.hidden(ids).data().to_floats(), ref, 1e-3, 0));
}

std::string build_error(const nlohmann::json& fields) {
  nlohmann::json j = {{"type", "attention"}, {"n_heads", 4}};
  for (auto it = fields.begin(); it != fields.end(); ++it) j[it.key()] = it.value();
  const ModelConfig m = resolve_preset("transformer-tiny");
  std::mt19937_64 rng(1);
  try {
    const MixerEntry& e = find_mixer("attention", "cfg.json: mixer");
    e.check(j, "cfg.json: mixer");
    e.make(j, m, nn::MixerSite{0, 2}, rng, "cfg.json: mixer");
  } catch (const std::exception& ex) {
    return ex.what();
  }
  return "";
}

TEST(SparseLayers, BadFieldsAreRefusedByName) {
  struct Bad {
    nlohmann::json fields;
    std::string field;
  };
  const std::vector<Bad> bad = {
      {{{"sparse_block", 4}, {"sparse_pattern", "bigbrid"}}, "sparse_pattern"},
      {{{"sparse_block", 4}, {"sparse_pattern", 3}}, "sparse_pattern"},
      {{{"sparse_pattern", "bigbird"}, {"sparse_random", 2}}, "sparse_block"},
      {{{"sparse_block", 5000}}, "sparse_block"},
      {{{"sparse_block", 4}, {"sparse_pattern", "fixed"}, {"sparse_random", 2}, {"sparse_stride", 2}}, "sparse_random"},
      {{{"sparse_block", 4}, {"sparse_pattern", "fixed"}}, "sparse_stride"},
      {{{"sparse_block", 4}, {"sparse_pattern", "fixed"}, {"sparse_stride", 2}, {"sparse_summary", 3}}, "sparse_summary"},
      {{{"sparse_block", 4}, {"sparse_pattern", "dilated"}, {"sparse_segments", "2,8"}, {"sparse_dilations", "1"}},
       "sparse_dilations"},
      {{{"sparse_block", 4}, {"sparse_pattern", "dilated"}, {"sparse_segments", "2,x"}, {"sparse_dilations", "1,2"}},
       "sparse_segments"},
      {{{"sparse_block", 4}, {"sparse_local", 0}}, "sparse_local"},
      {{{"sparse_block", 4}, {"sparse_random", -1}}, "sparse_random"},
      {{{"moba_block", 5000}}, "moba_block"},
      {{{"moba_block", 8}, {"moba_topk", 0}}, "moba_topk"},
      {{{"moba_block", 8}, {"window", 16}}, "moba_block"},
      {{{"moba_block", 8}, {"kv_dtype", "int4"}}, "moba_block"},
  };
  for (const Bad& b : bad) {
    const std::string msg = build_error(b.fields);
    EXPECT_NE(msg.find(b.field), std::string::npos) << b.fields.dump() << " -> '" << msg << "'";
  }
  // The presets themselves build.
  for (const char* name : {"moba-tiny", "moba-small", "longformer-small", "bigbird-small"}) {
    SCOPED_TRACE(name);
    EXPECT_NO_THROW(LanguageModel m(resolve_preset(name)));
  }
}

// The small presets match transformer-small's parameter count (the arena compares at equal size).
TEST(SparseLayers, SmallPresetsMatchTheTransformer) {
  const int64_t want = LanguageModel(resolve_preset("transformer-small")).num_parameters();
  for (const char* name : {"moba-small", "longformer-small", "bigbird-small"})
    EXPECT_EQ(LanguageModel(resolve_preset(name)).num_parameters(), want) << name;
}

}  // namespace
}  // namespace sw::models
