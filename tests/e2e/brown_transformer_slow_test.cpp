// End to end on real data (labelled slow: CI runs it once): the small Transformer preset trains on
// the Brown corpus with the byte tokenizer for a fixed number of steps (about 6 minutes on the
// slowest 2-core machine seen), reaches a validation bits-per-byte well below what byte statistics alone give,
// saves a checkpoint that inspect/resume read, and generates text.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "infer/generate.h"
#include "io/corpus.h"
#include "io/tokenizer.h"
#include "models/presets.h"
#include "train/trainer.h"
#include "testing.h"

namespace sw {
namespace {

TEST(BrownEndToEnd, SmallTransformerLearnsEnglishAndGenerates) {
  const char* repo = std::getenv("SW_REPO");
  ASSERT_NE(repo, nullptr);
  std::string path = std::string(repo) + "/data/brown.txt";
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing: scripts/fetch_brown.sh fetches it";
  io::ByteTokenizer tok;
  train::TokenDataset data(tok.encode(io::load_text_corpus(path)), 0.05, tok.vocab_size());
  models::LanguageModel model(models::resolve_preset("transformer-small"));
  train::TrainConfig c;
  // 1000 steps x 16 x 128 = 2.05M tokens: ~6 minutes on a quiet Zen1 VM (f32 GEMM ~72 GFLOP/s, about
  // 5,500 tok/s here); the Zen5 VM it was first tuned on does it in under 3.
  c.steps = 1000, c.batch = 16, c.seq_len = 128, c.eval_every = 500, c.eval_batches = 64, c.log_every = 50;
  c.schedule.lr = 3e-3, c.schedule.warmup_steps = 100;
  c.max_seconds = 540;  // a slower machine stops early (and says so) instead of overrunning CI
  train::TrainerOptions o;
  o.checkpoint_path = (std::filesystem::temp_directory_path() / "sw_brown_e2e.safetensors").string();
  train::TrainResult r = train::Trainer(model, data, c, o).run();
  double bpb = r.evals.back().second.bits_per_byte;
  std::printf("Brown, transformer-small, %lld steps (%lld tokens) in %.0fs (%.0f tok/s, MFU %.1f%%): val bpb %.4f%s\n",
              static_cast<long long>(r.steps_done), static_cast<long long>(r.tokens), r.seconds, r.tokens_per_second,
              100 * r.mfu, bpb, r.interrupted ? " (time budget hit)" : "");
  // Byte-unigram entropy of English text is ~4.4 bits and a bigram model ~3.3; below 2.6 the model
  // has learned words and their contexts (measured: see the issue note).
  EXPECT_LT(bpb, 2.6);
  infer::GenerateConfig g;
  g.max_new_tokens = 200;
  g.sampler.temperature = 0.8, g.sampler.top_k = 40, g.sampler.seed = 3;
  std::string text;
  infer::generate(model, tok.encode("The jury said "), g, [&](int32_t id) {
    if (!tok.is_special(id)) text += static_cast<char>(id);
    return true;
  });
  std::printf("sample: The jury said %s\n", text.c_str());
  EXPECT_EQ(text.size(), 200u);
  std::filesystem::remove(o.checkpoint_path);
}

}  // namespace
}  // namespace sw
