#include "train/trainer.h"

#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/allocator.h"
#include "core/bounded_json.h"
#include "core/timer.h"
#include "kernels/gemm/gemm.h"
#include "models/config_fields.h"
#include "ops/ops.h"
#include "train/diffusion_loss.h"

namespace sw::train {
namespace {

std::atomic<bool> g_interrupt{false};
std::atomic<int> g_interrupt_signal{0};
std::atomic<int64_t> g_interrupt_at_step{-1};
extern "C" void on_stop_signal(int sig) {
  g_interrupt_signal.store(sig);
  g_interrupt.store(true);
}

// SW_TEST_POISON_STEP=N (tests only): after optimizer step N a parameter becomes NaN, as a diverging
// step would make it between the gradient check and the next save.
int64_t poison_step_from_env() {
  const char* v = std::getenv("SW_TEST_POISON_STEP");
  if (!v || !*v) return -1;
  char* end = nullptr;
  long long n = std::strtoll(v, &end, 10);
  return end && *end == '\0' && n > 0 ? n : -1;
}

// Parameters, gradients, two AdamW moments (one SGD buffer), f32; activations very roughly: each
// block keeps about 16 tensors of [batch, seq_len, d_model] for the backward, and the LM head's
// chunked logits are small beside them.
void admit_training(models::LanguageModel& model, const TrainConfig& c) {
  const double params = static_cast<double>(model.num_parameters());
  const double state_per_param = 4.0 * (1 + 1 + (c.optimizer.type == "sgd" ? 1 : 2));
  const models::ModelConfig& m = model.config();
  const double activations = 16.0 * 4 * static_cast<double>(c.batch) * static_cast<double>(c.seq_len) *
                             static_cast<double>(m.d_model) * static_cast<double>(m.n_layers);
  const double need = params * state_per_param + activations, limit = static_cast<double>(memory_limit_bytes());
  auto fmt = [](double b) { return format_bytes(b > 9e18 ? INT64_MAX : static_cast<int64_t>(b)); };
  char count[32];
  std::snprintf(count, sizeof count, "%.3g", params);
  SW_CHECK(need <= limit, "memory", "training ", m.name, ": ", count, " parameters need ",
           fmt(params * state_per_param), " for weights, gradients and optimizer state, and batch x seq_len x d_model x ",
           "n_layers = ", c.batch, " x ", c.seq_len, " x ", m.d_model, " x ", m.n_layers, " about ", fmt(activations),
           " of activations: ", fmt(need), " in all, more than this machine's ", fmt(limit),
           " (lower batch or seq_len; README: Resource limits)");
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) % 3600 / 60);
  return buf;
}

}  // namespace

void install_interrupt_handler() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}
bool interrupt_requested() { return g_interrupt.load(); }
int interrupt_signal() { return g_interrupt_signal.load(); }
void request_interrupt() { g_interrupt.store(true); }
void request_interrupt_after_for_test(int64_t step) { g_interrupt_at_step.store(step); }

double probe_gemm_gflops(DType dtype) {
  const int64_t m = 512, n = 768, k = 768;
  Tensor a = Tensor::full({m, k}, 0.5, dtype), b = Tensor::full({k, n}, 0.25, dtype), c = Tensor::zeros({m, n});
  kernels::GemmArgs g;
  g.m = m, g.n = n, g.k = k, g.a = a.raw_data(), g.a_type = dtype, g.lda = k, g.b = b.raw_data(), g.b_type = dtype;
  g.ldb = n, g.c = c.data<float>(), g.ldc = n;
  double t = time_median([&] { kernels::gemm(g); }, 0.3);
  return 2.0 * m * n * k / t * 1e-9;
}

nlohmann::json train_config_to_json(const TrainConfig& c) {
  nlohmann::json j = models::fields_to_json(c);
  j["optimizer"] = models::fields_to_json(c.optimizer);
  j["schedule"] = models::fields_to_json(c.schedule);
  return j;
}

TrainConfig train_config_from_json(const nlohmann::json& j, const std::string& where) {
  TrainConfig c;
  models::FieldReader r(j, where);
  r.allow("optimizer");
  r.allow("schedule");
  c.visit(r);
  r.finish();
  if (j.contains("optimizer")) c.optimizer = models::parse_fields<OptimizerConfig>(j["optimizer"], where + ".optimizer");
  if (j.contains("schedule")) c.schedule = models::parse_fields<ScheduleConfig>(j["schedule"], where + ".schedule");
  validate_train_config(c, where);
  return c;
}

void validate_train_counts(const TrainConfig& c, const std::string& where) {
  // Integer fields: the ranges of models::integer_field_range, checked here too for configs built in code.
  auto count = [&](const char* name, int64_t v) {
    const models::IntRange r = models::integer_field_range(name);
    SW_CHECK(v >= r.min && v <= r.max, "config", where, ".", name, ": expected an integer in [", r.min, ", ", r.max,
             "], got ", v);
  };
  count("steps", c.steps), count("batch", c.batch), count("seq_len", c.seq_len), count("grad_accum", c.grad_accum);
  count("log_every", c.log_every), count("eval_every", c.eval_every), count("eval_batches", c.eval_batches);
  count("save_every", c.save_every), count("keep_checkpoints", c.keep_checkpoints);
  count("warmup_steps", c.schedule.warmup_steps), count("eval_mc", c.eval_mc);
}

void validate_train_config(const TrainConfig& c, const std::string& where) {
  validate_train_counts(c, where);
  // Real fields: [lo, hi], or (lo, hi] / [lo, hi) where an end is open.
  auto real = [&](const std::string& name, double v, double lo, double hi, bool lo_open, bool hi_open) {
    const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    SW_CHECK(ok, "config", where, ".", name, ": expected a number in ", lo_open ? "(" : "[", lo, ", ", hi,
             hi_open ? ")" : "]", ", got ", v);
  };
  real("max_seconds", c.max_seconds, 0, 1e9, false, false);
  real("schedule.lr", c.schedule.lr, 0, 1000, true, false);
  real("schedule.min_lr_ratio", c.schedule.min_lr_ratio, 0, 1, false, false);
  real("schedule.decay_fraction", c.schedule.decay_fraction, 0, 1, false, false);
  real("optimizer.beta1", c.optimizer.beta1, 0, 1, false, true);
  real("optimizer.beta2", c.optimizer.beta2, 0, 1, false, true);
  real("optimizer.eps", c.optimizer.eps, 0, 1, true, false);
  real("optimizer.weight_decay", c.optimizer.weight_decay, 0, 10, false, false);
  real("optimizer.momentum", c.optimizer.momentum, 0, 1, false, true);
  real("optimizer.grad_clip", c.optimizer.grad_clip, 0, 1e6, false, false);
  SW_CHECK(c.precision == "f32" || c.precision == "bf16", "config", where, ".precision: expected f32 or bf16, got '",
           cut_text(c.precision), "'");
  SW_CHECK(c.schedule.type == "cosine" || c.schedule.type == "wsd" || c.schedule.type == "constant", "config", where,
           ".schedule.type: expected cosine, wsd or constant, got '", cut_text(c.schedule.type), "'");
  SW_CHECK(c.optimizer.type == "adamw" || c.optimizer.type == "sgd", "config", where,
           ".optimizer.type: expected adamw or sgd, got '", cut_text(c.optimizer.type), "'");
}

// The clean window of a validation batch for a masked-diffusion model: the AR targets (tokens 1..T of
// the window), scored where >= 0; an ignored target (a position already scored by an earlier window)
// is context, its token read from the inputs one place on (the tail pad of a short split stays 0).
static void diffusion_window(const Batch& b, Tensor& clean, std::vector<uint8_t>& scored) {
  const int64_t B = b.targets.dim(0), T = b.targets.dim(1);
  clean = Tensor::empty({B, T}, DType::i32);
  scored.assign(static_cast<size_t>(B * T), 0);
  const int32_t* in = b.inputs.data<int32_t>();
  const int32_t* tg = b.targets.data<int32_t>();
  int32_t* x = clean.data<int32_t>();
  for (int64_t r = 0; r < B; ++r)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = r * T + t;
      scored[i] = tg[i] >= 0;
      x[i] = tg[i] >= 0 ? tg[i] : t + 1 < T ? in[i + 1] : 0;
    }
}

EvalResult evaluate(models::LanguageModel& model, const TokenDataset& data, int64_t batch, int64_t seq_len,
                    int64_t max_batches, double bytes_per_token, int64_t n_mc) {
  const std::string bad = first_nonfinite_parameter(model);
  SW_CHECK(bad.empty(), "eval", bad, " is not finite; a diverged model has no meaningful loss");
  const bool diffusion = model.config().masked_diffusion();
  SW_CHECK(!diffusion || (n_mc >= 1 && n_mc <= 4096), "eval", "n_mc ", n_mc, ": expected an integer in [1, 4096]");
  NoGradGuard g;
  ValidationBatches vb(data, batch, seq_len);
  int64_t n = max_batches > 0 ? std::min(max_batches, vb.num_batches()) : vb.num_batches();
  double total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    Batch b = vb.get(i);
    if (diffusion) {
      Tensor clean;
      std::vector<uint8_t> scored;
      diffusion_window(b, clean, scored);
      // Fixed draws per batch (seeded by its index): the same checkpoint always gets the same figure.
      total += diffusion_nll_bound(model, clean, scored, n_mc, 0x6576616c ^ static_cast<uint64_t>(i), &count);
      continue;
    }
    int64_t valid = 0;
    const int32_t* t = b.targets.data<int32_t>();
    for (int64_t j = 0; j < b.targets.numel(); ++j) valid += t[j] >= 0;
    if (valid == 0) continue;
    total += model.loss(b.inputs, b.targets).item() * static_cast<double>(valid);
    count += valid;
  }
  EvalResult r;
  r.tokens = count;
  r.loss = count ? total / static_cast<double>(count) : NAN;
  r.perplexity = std::exp(r.loss);
  r.bits_per_byte = r.loss / std::log(2.0) / bytes_per_token;
  SW_CHECK(count == 0 || std::isfinite(r.loss), "eval", "the validation loss is not finite (", r.loss,
           ") although every parameter is");
  return r;
}

namespace {
// Everything that can be known before step 1 is checked before step 1 (and before the optimizer
// state is allocated): the config's ranges, the memory it needs, and that the validation split holds
// at least one window (a run must not train for hours and then fail at its first evaluation).
const TrainConfig& checked_before_start(models::LanguageModel& model, const TokenDataset& data, const TrainConfig& c) {
  validate_train_counts(c, "train config");  // sizes and periods; parsed configs had every field checked
  admit_training(model, c);
  ValidationBatches(data, c.batch, c.seq_len);
  // Masked diffusion: a data token equal to the [MASK] id would read as masked.
  if (model.config().masked_diffusion()) {
    const int32_t mask = model.config().resolved_mask_id();
    for (std::span<const int32_t> part : {data.train(), data.validation()})
      for (size_t i = 0; i < part.size(); ++i)
        SW_CHECK(part[i] != mask, "train", model.config().name, ": the data holds token ", mask,
                 ", the model's [MASK] id (mask_id), at position ", i, " of the ",
                 part.data() == data.train().data() ? "training" : "validation",
                 " split; a masked-diffusion model needs an id no data token takes (set mask_id)");
  }
  return c;
}
}  // namespace

Trainer::Trainer(models::LanguageModel& model, const TokenDataset& data, const TrainConfig& cfg, TrainerOptions opts)
    : model_(model), data_(data), cfg_(checked_before_start(model, data, cfg)), opts_(std::move(opts)),
      opt_(model, cfg.optimizer), sampler_(data, cfg.batch, cfg.seq_len, static_cast<uint64_t>(cfg.seed)),
      poison_step_(poison_step_from_env()), diffusion_(model.config().masked_diffusion()),
      mask_id_(model.config().resolved_mask_id()) {}

void Trainer::resume(const Checkpoint& ckpt) {
  SW_CHECK(ckpt.state.step <= cfg_.steps, "train", ckpt.file.path, ": the checkpoint is at step ", ckpt.state.step,
           " but steps is ", cfg_.steps, "; expected steps >= ", ckpt.state.step,
           " (continuing would rewrite the checkpoint with an earlier one)");
  load_model_weights(model_, ckpt);
  load_optimizer_state(opt_, ckpt);
  try {
    sampler_.restore(ckpt.state.sampler_state);
  } catch (const Error& e) {
    throw Error(str_cat("[checkpoint] ", ckpt.file.path, ": train_state.sampler_state: ", e.what()));
  }
  step_ = ckpt.state.step;
  tokens_ = ckpt.state.tokens;
  saved_step_ = ckpt.state.step;
}

void Trainer::save(const std::string& path) {
  TrainState s;
  s.step = step_;
  s.tokens = tokens_;
  s.sampler_state = sampler_.state();
  s.train_config = train_config_to_json(cfg_);
  s.tokenizer = opts_.tokenizer_file;
  s.expert_load = model_.expert_loads();
  // Refuse a non-finite model before touching the kept files; save_checkpoint checks again, all tensors.
  const std::string bad = first_nonfinite_parameter(model_);
  SW_CHECK(bad.empty(), "train", "step ", step_, ": ", bad, " is not finite; not saving over the last good checkpoint",
           saved_step_ >= 0 ? str_cat(" (step ", saved_step_, ", ", path, ")") : std::string(),
           " (lower the learning rate)");
  if (saved_step_ < 0 && std::filesystem::exists(path)) {
    try {  // a checkpoint from an earlier run in this folder: keep it under its own step
      saved_step_ = read_checkpoint(path).state.step;
    } catch (const Error&) {
    }
  }
  if (path == opts_.checkpoint_path && saved_step_ != step_) keep_previous_checkpoint(path, saved_step_, cfg_.keep_checkpoints);
  save_checkpoint(path, model_, &opt_, s);
  if (path == opts_.checkpoint_path) saved_step_ = step_;
}

TrainResult Trainer::run() {
  TrainResult res;
  DType prec = cfg_.precision == "bf16" ? DType::bf16 : DType::f32;
  DType prev_prec = nn::matmul_dtype();
  nn::set_matmul_dtype(prec);
  struct Restore {
    DType d;
    ~Restore() { nn::set_matmul_dtype(d); }
  } restore{prev_prec};
  std::ofstream log;
  if (!opts_.log_path.empty()) {
    log.open(opts_.log_path, std::ios::app);
    SW_CHECK(log.good(), "train", "cannot open log file ", opts_.log_path);
  }
  // Training FLOPs per token: forward + backward (twice the forward) at the mean causal context.
  double flops_per_token = 3.0 * model_.forward_flops_per_token(cfg_.seq_len / 2);
  double peak = opts_.progress || !opts_.log_path.empty() ? probe_gemm_gflops(prec) * 1e9 : 0;
  int64_t tokens_per_step = cfg_.batch * cfg_.seq_len * cfg_.grad_accum;
  double t_start = now_seconds(), t_window = t_start;
  double step_seconds = 0;  // time in training steps only: excludes evaluation and checkpoint writes
  int64_t window_tokens = 0, first_step = step_;
  auto do_eval = [&] {
    EvalResult e =
        evaluate(model_, data_, cfg_.batch, cfg_.seq_len, cfg_.eval_batches, opts_.bytes_per_token, cfg_.eval_mc);
    res.evals.emplace_back(step_, e);
    if (opts_.progress)
      std::fprintf(stderr, "\neval step %lld: val loss %.4f, ppl %.2f, bits/byte %.4f (%lld tokens)\n",
                   static_cast<long long>(step_), e.loss, e.perplexity, e.bits_per_byte, static_cast<long long>(e.tokens));
    if (log.is_open())
      log << nlohmann::json{{"step", step_}, {"val_loss", e.loss}, {"val_ppl", e.perplexity}, {"val_bpb", e.bits_per_byte}}
                 .dump()
          << "\n" << std::flush;
  };
  while (step_ < cfg_.steps) {
    double t_step = now_seconds();
    double lr = learning_rate(cfg_.schedule, step_, cfg_.steps);
    model_.zero_grad();
    double loss_sum = 0;
    for (int64_t micro = 0; micro < cfg_.grad_accum; ++micro) {
      Batch b = sampler_.next();
      // Masked diffusion: the clean sequence is the window's last T tokens; its masks are drawn from
      // (seed, step, micro-batch, row) alone, so a resumed run draws the same ones.
      Variable loss = diffusion_ ? masked_diffusion_loss(model_, draw_forward_process(b.targets, mask_id_,
                                                                                      static_cast<uint64_t>(cfg_.seed),
                                                                                      step_, micro))
                                 : model_.loss(b.inputs, b.targets);
      loss_sum += loss.item();
      (cfg_.grad_accum > 1 ? ops::scale(loss, 1.0 / static_cast<double>(cfg_.grad_accum)) : loss).backward();
    }
    double loss = loss_sum / static_cast<double>(cfg_.grad_accum);
    std::string bad = std::isfinite(loss) ? first_nonfinite_grad(model_) : "the loss (" + std::to_string(loss) + ")";
    ++step_;
    tokens_ += tokens_per_step;
    window_tokens += tokens_per_step;
    if (!bad.empty()) {
      ++res.skipped_steps;
      if (!cfg_.skip_nonfinite)
        throw Error(str_cat("[train] step ", step_, ": non-finite value in ", bad,
                            " (lower the learning rate, or set skip_nonfinite to skip such steps)"));
      if (opts_.progress) std::fprintf(stderr, "\nstep %lld skipped: non-finite value in %s\n", static_cast<long long>(step_), bad.c_str());
      model_.zero_grad();
    } else {
      opt_.step(lr);
      model_.end_training_step();
      if (step_ == poison_step_) {
        Tensor w = model_.parameters().front()->var.data();
        w.data<float>()[0] = NAN;
      }
    }
    res.losses.emplace_back(step_, loss);
    step_seconds += now_seconds() - t_step;
    bool last = step_ == cfg_.steps;
    if (step_ % cfg_.log_every == 0 || last) {
      double now = now_seconds();
      double tps = window_tokens / std::max(1e-9, now - t_window);
      double mfu = peak > 0 ? tps * flops_per_token / peak : 0;
      double eta = (cfg_.steps - step_) * static_cast<double>(tokens_per_step) / std::max(1e-9, tps);
      if (opts_.progress)
        std::fprintf(stderr, "\rstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | MFU %.1f%% | ETA %s      ",
                     static_cast<long long>(step_), static_cast<long long>(cfg_.steps), loss, lr, tps, 100 * mfu,
                     format_duration(eta).c_str());
      if (log.is_open()) {
        nlohmann::json line{{"step", step_},       {"loss", loss}, {"lr", lr}, {"grad_norm", opt_.last_grad_norm()},
                            {"tokens_per_s", tps}, {"mfu", mfu},   {"elapsed_s", now - t_start}};
        // MoE: per-layer expert load of the last step and its worst max/mean imbalance.
        std::vector<std::vector<double>> loads = model_.expert_loads();
        if (!loads.empty()) {
          double worst = 0;
          for (const std::vector<double>& l : loads) {
            double mx = 0, sum = 0;
            for (double x : l) mx = std::max(mx, x), sum += x;
            worst = std::max(worst, sum > 0 ? mx * static_cast<double>(l.size()) / sum : 0.0);
          }
          line["expert_load"] = loads;
          line["expert_max_over_mean"] = worst;
        }
        log << line.dump() << "\n" << std::flush;
      }
      t_window = now, window_tokens = 0;
    }
    double t_pause = now_seconds();  // evaluation and checkpoints do not count against tokens/s
    if (cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0 && !last) do_eval();
    if (cfg_.save_every > 0 && step_ % cfg_.save_every == 0 && !opts_.checkpoint_path.empty() && !last)
      save(opts_.checkpoint_path);
    t_window += now_seconds() - t_pause;
    bool out_of_time = cfg_.max_seconds > 0 && now_seconds() - t_start > cfg_.max_seconds;
    if (g_interrupt_at_step.load() == step_) {
      g_interrupt_at_step.store(-1);
      g_interrupt.store(true);
    }
    if (interrupt_requested() || out_of_time) {
      g_interrupt.store(false);  // handled: the next run starts clean
      res.interrupted = true;
      res.stop_signal = interrupt_signal();
      g_interrupt_signal.store(0);
      if (opts_.progress)
        std::fprintf(stderr, "\n%s at step %lld: saving and stopping\n", out_of_time ? "time budget reached" : "interrupted",
                     static_cast<long long>(step_));
      break;
    }
  }
  if (opts_.progress) std::fprintf(stderr, "\n");
  if (res.skipped_steps > 0)
    std::fprintf(stderr, "skipped %lld of %lld steps for a non-finite loss or gradient\n",
                 static_cast<long long>(res.skipped_steps), static_cast<long long>(step_ - first_step));
  // A model that is not finite is neither saved over the last good checkpoint nor evaluated.
  const std::string bad = first_nonfinite_parameter(model_);
  SW_CHECK(bad.empty(), "train", "step ", step_, ": ", bad, " is not finite; not evaluated and not saved",
           saved_step_ >= 0 ? str_cat(" (the last good checkpoint, step ", saved_step_, ", is kept)") : std::string(),
           "; ", res.skipped_steps, " of ", step_ - first_step,
           " steps were skipped for a non-finite loss or gradient (lower the learning rate)");
  if (!opts_.checkpoint_path.empty()) save(opts_.checkpoint_path);
  do_eval();
  res.steps_done = step_;
  res.tokens = tokens_;
  res.seconds = now_seconds() - t_start;
  res.tokens_per_second = (step_ - first_step) * static_cast<double>(tokens_per_step) / std::max(1e-9, step_seconds);
  res.mfu = peak > 0 ? res.tokens_per_second * flops_per_token / peak : 0;
  return res;
}

}  // namespace sw::train
