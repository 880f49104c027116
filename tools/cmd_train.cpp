// `speedwins train`: trains a preset (or a config file) on a text corpus, writing a checkpoint,
// the tokenizer and a JSONL log into --out. `--resume` continues a run bit-exactly; `--init-from`
// starts a new run from a checkpoint's weights (a converted model).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "models/presets.h"
#include "tools/cli_common.h"
#include "tools/commands.h"
#include "train/trainer.h"

namespace sw::tools {
namespace {

struct TrainArgs {
  std::string preset, data = "brown", tokenizer = "byte", out, config, init_from;
  bool resume = false, quiet = false;
  // Overrides of the training config (negative / empty = keep).
  int64_t steps = -1, batch = -1, seq_len = -1, grad_accum = -1, eval_every = -1, save_every = -1, seed = -1;
  double lr = -1, max_seconds = -1;
  std::string precision, schedule;
  bool skip_nonfinite = false;
};

void apply_overrides(const TrainArgs& a, train::TrainConfig& c) {
  if (a.steps > 0) c.steps = a.steps;
  if (a.batch > 0) c.batch = a.batch;
  if (a.seq_len > 0) c.seq_len = a.seq_len;
  if (a.grad_accum > 0) c.grad_accum = a.grad_accum;
  if (a.eval_every >= 0) c.eval_every = a.eval_every;
  if (a.save_every >= 0) c.save_every = a.save_every;
  if (a.seed >= 0) c.seed = a.seed;
  if (a.lr > 0) c.schedule.lr = a.lr;
  if (a.max_seconds >= 0) c.max_seconds = a.max_seconds;
  if (!a.precision.empty()) c.precision = a.precision;
  if (!a.schedule.empty()) c.schedule.type = a.schedule;
  if (a.skip_nonfinite) c.skip_nonfinite = true;
  c = train::train_config_from_json(train::train_config_to_json(c), "command line");  // validates
}

int run_train(const TrainArgs& a) {
  namespace fs = std::filesystem;
  fs::create_directories(a.out);
  std::string ckpt_path = a.out + "/checkpoint.safetensors";
  std::unique_ptr<train::Checkpoint> ckpt;
  models::ModelConfig mcfg;
  train::TrainConfig tcfg;
  std::unique_ptr<io::Tokenizer> tok;
  SW_CHECK(!(a.resume && !a.init_from.empty()), "train", "--resume and --init-from do not combine");
  std::unique_ptr<train::Checkpoint> init;  // weights to start from (a converted model)
  if (a.resume) {
    SW_CHECK(fs::exists(ckpt_path), "train", "--resume: no checkpoint at ", ckpt_path);
    ckpt = std::make_unique<train::Checkpoint>(train::read_checkpoint(ckpt_path));
    mcfg = ckpt->config;
    tcfg = train::train_config_from_json(ckpt->state.train_config, ckpt_path + ":train_config");
    tok = make_tokenizer(a.out + "/" + ckpt->state.tokenizer);
  } else if (!a.init_from.empty()) {
    SW_CHECK(a.preset.empty(), "train", "--init-from takes the model from the checkpoint: drop --preset");
    init = std::make_unique<train::Checkpoint>(train::read_checkpoint(a.init_from));
    mcfg = init->config;
    if (!init->state.train_config.empty())
      tcfg = train::train_config_from_json(init->state.train_config, a.init_from + ":train_config");
    const std::string dir = fs::path(a.init_from).parent_path().string();
    tok = make_tokenizer(init->state.tokenizer.empty() ? a.tokenizer : (dir.empty() ? "." : dir) + "/" + init->state.tokenizer);
  } else {
    SW_CHECK(!a.preset.empty(), "train", "--preset is required (a preset name or a config JSON path)");
    mcfg = models::resolve_preset(a.preset);
    if (!a.config.empty()) {
      std::ifstream f(a.config);
      SW_CHECK(f.good(), "train", "cannot open --config ", a.config);
      nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
      SW_CHECK(!j.is_discarded(), "train", a.config, ": not valid JSON");
      tcfg = train::train_config_from_json(j, a.config);
    }
    tok = make_tokenizer(a.tokenizer);
  }
  apply_overrides(a, tcfg);
  SW_CHECK(tok->vocab_size() <= mcfg.vocab_size, "train", "the tokenizer has ", tok->vocab_size(),
           " ids but the model's vocab_size is ", mcfg.vocab_size);
  std::string tok_file = "tokenizer.swtok";
  tok->save(a.out + "/" + tok_file);
  train::TextSource text = train::load_text_source(a.data);
  EncodedText enc = encode_text(*tok, text.text);
  train::TokenDataset data(std::move(enc.tokens), 0.05, tok->vocab_size());
  models::LanguageModel model(mcfg, a.preset.empty() ? a.init_from : a.preset);
  if (init) train::load_model_weights(model, *init);
  std::fprintf(stderr, "model %s: %.2fM parameters | data %s: %zu tokens (%.2f bytes/token) | %lld steps of %lld x %lld\n",
               mcfg.name.c_str(), model.num_parameters() / 1e6, text.name.c_str(), data.size(), enc.bytes_per_token,
               static_cast<long long>(tcfg.steps), static_cast<long long>(tcfg.batch), static_cast<long long>(tcfg.seq_len));
  train::TrainerOptions o;
  o.checkpoint_path = ckpt_path;
  o.log_path = a.out + "/train_log.jsonl";
  o.tokenizer_file = tok_file;
  o.bytes_per_token = enc.bytes_per_token;
  o.progress = !a.quiet;
  train::Trainer trainer(model, data, tcfg, o);
  if (ckpt) {
    trainer.resume(*ckpt);
    std::fprintf(stderr, "resumed from %s at step %lld\n", ckpt_path.c_str(), static_cast<long long>(ckpt->state.step));
  }
  train::install_interrupt_handler();
  train::TrainResult r = trainer.run();
  const train::EvalResult& e = r.evals.back().second;
  std::printf("trained %lld steps (%lld tokens) in %.1fs: %.0f tok/s, MFU %.1f%%; val loss %.4f, bits/byte %.4f%s\n",
              static_cast<long long>(r.steps_done), static_cast<long long>(r.tokens), r.seconds, r.tokens_per_second,
              100 * r.mfu, e.loss, e.bits_per_byte, r.interrupted ? " (stopped early)" : "");
  std::printf("checkpoint: %s\n", ckpt_path.c_str());
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app) {
  static TrainArgs a;
  CLI::App* s = app.add_subcommand("train", "Train a model preset on a text corpus");
  s->add_option("--preset", a.preset, "Preset name (see `speedwins presets`) or config JSON path");
  s->add_option("--data", a.data, "brown | synthetic | a text file or folder")->capture_default_str();
  s->add_option("--tokenizer", a.tokenizer, "byte | a tokenizer file")->capture_default_str();
  s->add_option("--out", a.out, "Run folder (checkpoint, tokenizer, log)")->required();
  s->add_option("--config", a.config, "Training config JSON (fields of TrainConfig)");
  s->add_flag("--resume", a.resume, "Continue from <out>/checkpoint.safetensors");
  s->add_option("--init-from", a.init_from,
                "Start from this checkpoint's model and weights with a fresh optimizer (e.g. a converted model)");
  s->add_flag("--quiet", a.quiet, "No progress line");
  s->add_option("--steps", a.steps, "Optimizer steps");
  s->add_option("--batch", a.batch, "Sequences per micro-batch");
  s->add_option("--seq-len", a.seq_len, "Tokens per sequence");
  s->add_option("--grad-accum", a.grad_accum, "Micro-batches per step");
  s->add_option("--lr", a.lr, "Peak learning rate");
  s->add_option("--schedule", a.schedule, "cosine | wsd | constant");
  s->add_option("--precision", a.precision, "f32 | bf16");
  s->add_option("--eval-every", a.eval_every, "Evaluate every N steps");
  s->add_option("--save-every", a.save_every, "Checkpoint every N steps");
  s->add_option("--max-seconds", a.max_seconds, "Wall-time budget");
  s->add_option("--seed", a.seed, "Data-order seed");
  s->add_flag("--skip-nonfinite", a.skip_nonfinite, "Skip steps with non-finite loss/gradients instead of stopping");
  set_runner(s, [] { return run_train(a); });
}

}  // namespace sw::tools
