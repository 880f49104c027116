// `speedwins train`: trains a preset (or a config file) on a text corpus, writing a checkpoint,
// the tokenizer and a JSONL log into --out. `--resume` continues a run bit-exactly; `--init-from`
// starts a new run from a checkpoint's weights (a converted model).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "core/bounded_json.h"
#include "models/config_fields.h"
#include "models/model_limits.h"
#include "models/presets.h"
#include "tools/cli_common.h"
#include "tools/commands.h"
#include "train/trainer.h"

namespace sw::tools {
namespace {

struct TrainArgs {
  std::string preset, data = "brown", tokenizer = "byte", out, config, init_from;
  bool resume = false, quiet = false;
  // Overrides of the training config: unset keeps the config's value; a set value is range-checked.
  std::optional<int64_t> steps, batch, seq_len, grad_accum, eval_every, save_every, keep_checkpoints, seed;
  std::optional<double> lr, max_seconds;
  std::string precision, schedule;
  bool skip_nonfinite = false;
};

// Every given flag is validated with its own name and range (an out-of-range value is an error,
// never silently replaced by a default).
void apply_overrides(const TrainArgs& a, train::TrainConfig& c) {
  auto set = [](const char* flag, const char* field, const std::optional<int64_t>& v, int64_t& dst) {
    if (!v) return;
    const models::IntRange r = models::integer_field_range(field);
    SW_CHECK(*v >= r.min && *v <= r.max, "train", "command line: ", flag, " ", *v, ": expected an integer in [", r.min,
             ", ", r.max, "]");
    dst = *v;
  };
  set("--steps", "steps", a.steps, c.steps);
  set("--batch", "batch", a.batch, c.batch);
  set("--seq-len", "seq_len", a.seq_len, c.seq_len);
  set("--grad-accum", "grad_accum", a.grad_accum, c.grad_accum);
  set("--eval-every", "eval_every", a.eval_every, c.eval_every);
  set("--save-every", "save_every", a.save_every, c.save_every);
  set("--keep-checkpoints", "keep_checkpoints", a.keep_checkpoints, c.keep_checkpoints);
  set("--seed", "seed", a.seed, c.seed);
  if (a.lr) {
    SW_CHECK(std::isfinite(*a.lr) && *a.lr > 0 && *a.lr <= 1000, "train", "command line: --lr ", *a.lr,
             ": expected a number in (0, 1000]");
    c.schedule.lr = *a.lr;
  }
  if (a.max_seconds) {
    SW_CHECK(std::isfinite(*a.max_seconds) && *a.max_seconds >= 0 && *a.max_seconds <= 1e9, "train",
             "command line: --max-seconds ", *a.max_seconds, ": expected a number in [0, 1e9]");
    c.max_seconds = *a.max_seconds;
  }
  if (!a.precision.empty()) c.precision = a.precision;
  if (!a.schedule.empty()) c.schedule.type = a.schedule;
  if (a.skip_nonfinite) c.skip_nonfinite = true;
  train::validate_train_config(c, "command line");
}

// A kill -9 during a checkpoint write leaves "<file>.tmp.<pid>"; remove those whose writer is gone.
void sweep_stale_temp_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || !e.is_regular_file(ec)) continue;
    const std::string pid_text = name.substr(at + 5);
    if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid() || (::kill(pid, 0) != 0 && errno == ESRCH)) {
      fs::remove(e.path(), ec);
      if (!ec) std::fprintf(stderr, "removed %s, left by an interrupted write (process %d is gone)\n", e.path().c_str(), pid);
    }
  }
}

int run_train(const TrainArgs& a) {
  namespace fs = std::filesystem;
  fs::create_directories(a.out);
  sweep_stale_temp_files(a.out);
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
    if (!ckpt->verified) std::fprintf(stderr, "note: %s has no checksums (written before they existed); integrity not checked\n", ckpt_path.c_str());
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
    if (!a.config.empty()) tcfg = train::train_config_from_json(read_json_file(a.config), a.config);
    tok = make_tokenizer(a.tokenizer);
  }
  apply_overrides(a, tcfg);
  // The model's ids and the tokenizer's must match: fewer model ids cannot hold the data, and more
  // would train rows no token reaches that `generate` could then sample and not decode.
  const std::string model_src = a.resume ? ckpt_path : !a.init_from.empty() ? a.init_from : a.preset;
  SW_CHECK(tok->vocab_size() == mcfg.vocab_size, "train", model_src, ": vocab_size is ", mcfg.vocab_size,
           " but the tokenizer has ", tok->vocab_size(), " ids; expected vocab_size = ", tok->vocab_size());
  std::string tok_file = "tokenizer.swtok";
  tok->save(a.out + "/" + tok_file);
  train::TextSource text = train::load_text_source(a.data);
  EncodedText enc = encode_text(*tok, text.text);
  train::TokenDataset data(std::move(enc.tokens), 0.05, tok->vocab_size());
  std::unique_ptr<models::LanguageModel> built = models::build_model(mcfg, model_src);
  models::LanguageModel& model = *built;
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
  std::unique_ptr<train::Trainer> made;
  try {  // the early checks (memory, validation split) name the data and the model
    made = std::make_unique<train::Trainer>(model, data, tcfg, o);
  } catch (const Error& e) {
    throw Error(str_cat("[train] ", model_src, " on ", text.name, ": ", e.what()));
  }
  train::Trainer& trainer = *made;
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
  if (r.skipped_steps > 0)
    std::printf("skipped %lld steps for a non-finite loss or gradient\n", static_cast<long long>(r.skipped_steps));
  std::printf("checkpoint: %s\n", ckpt_path.c_str());
  // Stopped by a signal: saved, and the exit status says so (130 SIGINT, 143 SIGTERM).
  return r.stop_signal ? 128 + r.stop_signal : 0;
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
  s->add_option("--keep-checkpoints", a.keep_checkpoints, "Good checkpoints kept (the newest and N - 1 older ones)");
  s->add_option("--max-seconds", a.max_seconds, "Wall-time budget");
  s->add_option("--seed", a.seed, "Data-order seed");
  s->add_flag("--skip-nonfinite", a.skip_nonfinite, "Skip steps with non-finite loss/gradients instead of stopping");
  set_runner(s, [] { return run_train(a); });
  set_validator(s, [] {
    train::TrainConfig defaults;
    apply_overrides(a, defaults);
  });
}

}  // namespace sw::tools
