// Training: a tiny model overfits a short text; N straight steps == N/2, save, resume, N/2 (same
// losses and weights, bit for bit); a non-finite gradient stops training with the tensor named.
#include <filesystem>

#include "io/tokenizer.h"
#include "models/presets.h"
#include "train/trainer.h"
#include "models/model_testing.h"
#include "testing.h"

namespace sw::train {
namespace {

std::string tmp_dir(const std::string& name) {
  std::string d = std::filesystem::temp_directory_path().string() + "/sw_trainer_test_" + name + "_" +
                  std::to_string(::getpid());
  std::filesystem::create_directories(d);
  return d;
}

using testing::text_tokens;

TrainConfig tiny_config(int64_t steps) {
  TrainConfig c;
  c.steps = steps, c.batch = 4, c.seq_len = 32, c.eval_every = 0, c.eval_batches = 2, c.log_every = 1000;
  c.schedule.lr = 3e-3, c.schedule.warmup_steps = 5;
  return c;
}

TEST(Trainer, TinyModelOverfitsAShortText) {
  models::ModelConfig m = models::resolve_preset("transformer-tiny");
  models::LanguageModel model(m);
  TokenDataset data(text_tokens("the quick brown fox jumps over the lazy dog. ", 40), 0.05, 260);
  TrainConfig c = tiny_config(300);
  c.schedule.lr = 1e-2;
  c.optimizer.weight_decay = 0;
  TrainerOptions o;
  o.progress = false;
  TrainResult r = Trainer(model, data, c, o).run();
  // A 45-byte sentence repeated: memorisable; the final loss must fall below 0.1 nats/token.
  double last = r.losses.back().second;
  EXPECT_LT(last, 0.1) << "loss after 300 steps: " << last;
  EXPECT_LT(r.evals.back().second.loss, 0.1);
}

TEST(Trainer, ResumeIsBitExact) {
  std::string dir = tmp_dir("resume");
  std::vector<int32_t> toks = text_tokens("speed always wins, but quality must follow. ", 60);
  TokenDataset data(toks, 0.05, 260);
  TrainerOptions o;
  o.progress = false;
  TrainConfig c = tiny_config(20);

  models::LanguageModel straight(models::resolve_preset("transformer-tiny"));
  TrainResult full = Trainer(straight, data, c, o).run();

  models::LanguageModel first(models::resolve_preset("transformer-tiny"));
  TrainConfig half = c;
  half.max_seconds = 0;
  o.checkpoint_path = dir + "/ckpt.safetensors";
  Trainer t1(first, data, half, o);
  // Stop after 10 of the 20 steps as an interrupted run would (the schedule still spans 20 steps).
  request_interrupt_after_for_test(10);
  TrainResult a = t1.run();
  ASSERT_TRUE(a.interrupted);
  ASSERT_EQ(a.steps_done, 10);

  models::LanguageModel second(models::resolve_preset("transformer-tiny"));
  Trainer t2(second, data, c, o);
  t2.resume(read_checkpoint(o.checkpoint_path));
  TrainResult b = t2.run();
  ASSERT_EQ(b.steps_done, 20);
  std::vector<double> joined;
  for (auto& [s, l] : a.losses) joined.push_back(l);
  for (auto& [s, l] : b.losses) joined.push_back(l);
  ASSERT_EQ(joined.size(), full.losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], full.losses[i].second) << "step " << i + 1;
  std::vector<nn::Parameter*> pa = straight.parameters(), pb = second.parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(testing::all_close(pa[i]->var.data().to_floats(), pb[i]->var.data().to_floats(), 0, 0)) << pa[i]->name;
  std::filesystem::remove_all(dir);
}

TEST(Trainer, NonFiniteGradientStopsWithTheTensorNamed) {
  models::LanguageModel model(models::resolve_preset("transformer-tiny"));
  TokenDataset data(text_tokens("abc ", 200), 0.05, 260);
  TrainConfig c = tiny_config(5);
  c.schedule.lr = 1e30;  // blows the weights up after the first step
  c.optimizer.grad_clip = 0;
  TrainerOptions o;
  o.progress = false;
  try {
    Trainer(model, data, c, o).run();
    FAIL() << "training with lr 1e30 must hit a non-finite value";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[train] step"), std::string::npos) << m;
    EXPECT_NE(m.find("non-finite"), std::string::npos) << m;
  }
  // With skip_nonfinite the same run finishes, skipping the bad steps, and says how many.
  models::LanguageModel model2(models::resolve_preset("transformer-tiny"));
  c.skip_nonfinite = true;
  TrainResult r;
  EXPECT_NO_THROW(r = Trainer(model2, data, c, o).run());
  EXPECT_EQ(r.skipped_steps, 4);  // step 1 is finite and blows the weights up; 2..5 are skipped
}

TEST(TrainConfig, EveryFieldIsRangeChecked) {
  struct Case {
    const char* json;
    const char* field;
  };
  for (const Case& k : std::vector<Case>{{R"({"log_every": 0})", "log_every"},
                                         {R"({"steps": -5})", "steps"},
                                         {R"({"batch": 0})", "batch"},
                                         {R"({"seq_len": 0})", "seq_len"},
                                         {R"({"grad_accum": 0})", "grad_accum"},
                                         {R"({"keep_checkpoints": 0})", "keep_checkpoints"},
                                         {R"({"schedule": {"lr": -1}})", "schedule.lr"},
                                         {R"({"schedule": {"warmup_steps": -1}})", "warmup_steps"},
                                         {R"({"optimizer": {"beta1": 2}})", "optimizer.beta1"},
                                         {R"({"steps": 99999999999999999999})", "steps"}}) {
    try {
      train_config_from_json(nlohmann::json::parse(k.json), "t.json");
      ADD_FAILURE() << k.json << " was accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("t.json"), std::string::npos) << m;
      EXPECT_NE(m.find(k.field), std::string::npos) << m;
      EXPECT_NE(m.find("expected"), std::string::npos) << m;
    }
  }
}

TEST(Schedule, WarmupCosineAndWsd) {
  ScheduleConfig s;
  s.lr = 1.0, s.min_lr_ratio = 0.1, s.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(learning_rate(s, 0, 100), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(s, 9, 100), 1.0);
  EXPECT_NEAR(learning_rate(s, 99, 100), 0.1, 1e-3);
  s.type = "wsd", s.decay_fraction = 0.2;
  EXPECT_DOUBLE_EQ(learning_rate(s, 50, 100), 1.0);
  EXPECT_NEAR(learning_rate(s, 100, 100), 0.1, 1e-12);
  s.type = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(s, 80, 100), 1.0);
  s.type = "bogus";
  EXPECT_THROW(learning_rate(s, 1, 10), Error);
}

}  // namespace
}  // namespace sw::train
