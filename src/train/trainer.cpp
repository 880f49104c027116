#include "train/trainer.h"

#include <csignal>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/timer.h"
#include "kernels/gemm/gemm.h"
#include "models/config_fields.h"
#include "ops/ops.h"

namespace sw::train {
namespace {

std::atomic<bool> g_interrupt{false};
std::atomic<int64_t> g_interrupt_at_step{-1};
extern "C" void on_sigint(int) { g_interrupt.store(true); }

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) % 3600 / 60);
  return buf;
}

}  // namespace

void install_interrupt_handler() { std::signal(SIGINT, on_sigint); }
bool interrupt_requested() { return g_interrupt.load(); }
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
  SW_CHECK(c.steps > 0 && c.batch > 0 && c.seq_len > 0 && c.grad_accum > 0, "train", where,
           ": steps, batch, seq_len and grad_accum must be positive");
  SW_CHECK(c.precision == "f32" || c.precision == "bf16", "train", where, ".precision: expected f32 or bf16, got '",
           c.precision, "'");
  return c;
}

EvalResult evaluate(models::LanguageModel& model, const TokenDataset& data, int64_t batch, int64_t seq_len,
                    int64_t max_batches, double bytes_per_token) {
  NoGradGuard g;
  ValidationBatches vb(data, batch, seq_len);
  int64_t n = max_batches > 0 ? std::min(max_batches, vb.num_batches()) : vb.num_batches();
  double total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    Batch b = vb.get(i);
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
  return r;
}

Trainer::Trainer(models::LanguageModel& model, const TokenDataset& data, const TrainConfig& cfg, TrainerOptions opts)
    : model_(model), data_(data), cfg_(cfg), opts_(std::move(opts)), opt_(model, cfg.optimizer),
      sampler_(data, cfg.batch, cfg.seq_len, static_cast<uint64_t>(cfg.seed)) {}

void Trainer::resume(const Checkpoint& ckpt) {
  load_model_weights(model_, ckpt);
  load_optimizer_state(opt_, ckpt);
  sampler_.restore(ckpt.state.sampler_state);
  step_ = ckpt.state.step;
  tokens_ = ckpt.state.tokens;
}

void Trainer::save(const std::string& path) {
  TrainState s;
  s.step = step_;
  s.tokens = tokens_;
  s.sampler_state = sampler_.state();
  s.train_config = train_config_to_json(cfg_);
  s.tokenizer = opts_.tokenizer_file;
  s.expert_load = model_.expert_loads();
  save_checkpoint(path, model_, &opt_, s);
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
    EvalResult e = evaluate(model_, data_, cfg_.batch, cfg_.seq_len, cfg_.eval_batches, opts_.bytes_per_token);
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
      Variable loss = model_.loss(b.inputs, b.targets);
      loss_sum += loss.item();
      (cfg_.grad_accum > 1 ? ops::scale(loss, 1.0 / static_cast<double>(cfg_.grad_accum)) : loss).backward();
    }
    double loss = loss_sum / static_cast<double>(cfg_.grad_accum);
    std::string bad = std::isfinite(loss) ? first_nonfinite_grad(model_) : "the loss (" + std::to_string(loss) + ")";
    ++step_;
    tokens_ += tokens_per_step;
    window_tokens += tokens_per_step;
    if (!bad.empty()) {
      if (!cfg_.skip_nonfinite)
        throw Error(str_cat("[train] step ", step_, ": non-finite value in ", bad,
                            " (lower the learning rate, or set skip_nonfinite to skip such steps)"));
      if (opts_.progress) std::fprintf(stderr, "\nstep %lld skipped: non-finite value in %s\n", static_cast<long long>(step_), bad.c_str());
      model_.zero_grad();
    } else {
      opt_.step(lr);
      model_.end_training_step();
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
      if (opts_.progress)
        std::fprintf(stderr, "\n%s at step %lld: saving and stopping\n", out_of_time ? "time budget reached" : "interrupted",
                     static_cast<long long>(step_));
      break;
    }
  }
  if (opts_.progress) std::fprintf(stderr, "\n");
  do_eval();
  if (!opts_.checkpoint_path.empty()) save(opts_.checkpoint_path);
  res.steps_done = step_;
  res.tokens = tokens_;
  res.seconds = now_seconds() - t_start;
  res.tokens_per_second = (step_ - first_step) * static_cast<double>(tokens_per_step) / std::max(1e-9, step_seconds);
  res.mfu = peak > 0 ? res.tokens_per_second * flops_per_token / peak : 0;
  return res;
}

}  // namespace sw::train
