// The training loop: batches from a TokenDataset, gradient accumulation, optimizer step with the
// learning-rate schedule, periodic evaluation (loss, perplexity, bits per byte), a progress line
// (step, loss, tokens/s, MFU, ETA), a JSONL log, checkpoints (periodic, on SIGINT, at the end), and
// a stop with an error naming the step and tensor when the loss or a gradient is not finite (or a
// skipped step when configured). Resuming from a checkpoint continues bit-exactly.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "models/language_model.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace sw::train {

struct TrainConfig {
  int64_t steps = 500;
  int64_t batch = 8;
  int64_t seq_len = 128;
  int64_t grad_accum = 1;       // micro-batches per optimizer step
  std::string precision = "f32";  // f32 | bf16 (bf16 GEMM inputs, f32 master weights and accumulation)
  int64_t eval_every = 100;     // 0 = only at the end
  int64_t eval_batches = 16;    // validation batches per evaluation (0 = the whole split)
  int64_t log_every = 10;
  int64_t save_every = 0;       // checkpoint period in steps (0 = only at the end and on SIGINT)
  int64_t keep_checkpoints = 3;  // good checkpoints kept: the newest plus keep - 1 older ones
  bool skip_nonfinite = false;  // skip a step with a non-finite loss/gradient instead of stopping
  double max_seconds = 0;       // stop (and save) after this wall time; 0 = no limit
  int64_t seed = 1;             // data order (and, for masked diffusion, the mask draws: diffusion_loss.h)
  int64_t eval_mc = 4;          // masked diffusion: Monte-Carlo draws of the likelihood bound per window
  OptimizerConfig optimizer;
  ScheduleConfig schedule;

  template <class V>
  void visit(V& v) {
    v("steps", steps, "optimizer steps");
    v("batch", batch, "sequences per micro-batch");
    v("seq_len", seq_len, "tokens per sequence");
    v("grad_accum", grad_accum, "micro-batches per optimizer step");
    v("precision", precision, "f32 or bf16 (bf16 GEMMs, f32 master weights)");
    v("eval_every", eval_every, "evaluate every N steps (0 = at the end)");
    v("eval_batches", eval_batches, "validation batches per evaluation (0 = all)");
    v("log_every", log_every, "progress/log period in steps");
    v("save_every", save_every, "checkpoint period in steps (0 = end and SIGINT only)");
    v("keep_checkpoints", keep_checkpoints, "good checkpoints kept (the newest and keep - 1 older ones)");
    v("skip_nonfinite", skip_nonfinite, "skip steps with non-finite loss or gradients");
    v("max_seconds", max_seconds, "wall-time budget (0 = none)");
    v("seed", seed, "data-order seed");
    v("eval_mc", eval_mc, "masked diffusion: Monte-Carlo draws per validation window of the likelihood bound");
  }
};

nlohmann::json train_config_to_json(const TrainConfig& c);
// Parses and validates every field against its range (errors name `where`, the field and the range).
TrainConfig train_config_from_json(const nlohmann::json& j, const std::string& where);
void validate_train_config(const TrainConfig& c, const std::string& where);
void validate_train_counts(const TrainConfig& c, const std::string& where);  // the integer fields only

struct EvalResult {
  // mean nats per target token; for a masked-diffusion model the Monte-Carlo estimate of the
  // likelihood bound (an upper bound on the true nats per token), comparable with autoregressive loss
  double loss = 0;
  double perplexity = 0;
  double bits_per_byte = 0;
  int64_t tokens = 0;
};

// bytes_per_token: text bytes per token of the validation split (1 for the byte tokenizer).
// An autoregressive model: next-token cross-entropy over the validation windows. A masked-diffusion
// model (objective masked_diffusion): the same target tokens scored by the likelihood bound
// (diffusion_nll_bound, n_mc draws per window; the window's other tokens are context), with fixed
// draws, so the figure is reproducible.
EvalResult evaluate(models::LanguageModel& model, const TokenDataset& data, int64_t batch, int64_t seq_len,
                    int64_t max_batches, double bytes_per_token, int64_t n_mc = 4);

struct TrainerOptions {
  std::string checkpoint_path;  // "" = never save
  std::string log_path;         // JSONL; "" = no log file
  std::string tokenizer_file;   // recorded in checkpoints
  double bytes_per_token = 1.0;
  bool progress = true;         // the progress line on stderr
};

struct TrainResult {
  std::vector<std::pair<int64_t, double>> losses;  // (step, training loss) of every step
  std::vector<std::pair<int64_t, EvalResult>> evals;
  int64_t steps_done = 0, tokens = 0;
  double seconds = 0;                   // wall time of run(), evaluations included
  double tokens_per_second = 0, mfu = 0;  // over the training steps only
  bool interrupted = false;  // stopped by SIGINT/SIGTERM or the time budget
  int stop_signal = 0;       // SIGINT or SIGTERM when a signal stopped the run, else 0
  int64_t skipped_steps = 0;  // steps skipped for a non-finite loss or gradient (skip_nonfinite)
};

class Trainer {
 public:
  Trainer(models::LanguageModel& model, const TokenDataset& data, const TrainConfig& cfg, TrainerOptions opts);
  // Continues from a checkpoint: weights, optimizer state, step and data position.
  void resume(const Checkpoint& ckpt);
  TrainResult run();
  void save(const std::string& path);

 private:
  models::LanguageModel& model_;
  const TokenDataset& data_;
  TrainConfig cfg_;
  TrainerOptions opts_;
  Optimizer opt_;
  BatchSampler sampler_;
  int64_t step_ = 0, tokens_ = 0;
  int64_t saved_step_ = -1;   // the step of the checkpoint now at checkpoint_path (-1: none known)
  int64_t poison_step_ = -1;  // SW_TEST_POISON_STEP: tests inject divergence after this step
  bool diffusion_ = false;    // objective masked_diffusion: train with masked_diffusion_loss
  int32_t mask_id_ = -1;
};

// SIGINT and SIGTERM handling: install_interrupt_handler() makes either set a flag that the loop
// checks after each step; it then saves a checkpoint and returns with interrupted = true and
// stop_signal set (the CLI exits 128 + signal: 130 for SIGINT, 143 for SIGTERM).
void install_interrupt_handler();
bool interrupt_requested();
int interrupt_signal();  // the signal that set the flag (0 when requested otherwise)
void request_interrupt();
// Tests: behave as if SIGINT arrived right after optimizer step `step` of the next run.
void request_interrupt_after_for_test(int64_t step);

// fp32 or bf16 GEMM throughput of this machine at a typical training shape, measured in ~0.3 s:
// the denominator of the MFU on the progress line.
double probe_gemm_gflops(DType dtype);

}  // namespace sw::train
