#include "bench/model_bench.h"

#include <cstdio>
#include <random>
#include <sstream>

#include "core/allocator.h"
#include "core/timer.h"
#include "nn/layers.h"
#include "nn/profile.h"
#include "train/optimizer.h"

namespace sw::bench {
namespace {

Tensor random_ids(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(b * t);
  for (auto& x : v) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return Tensor::from_vector(v, {b, t});
}

bool has_bf16_weights(models::LanguageModel& m) {
  bool any = false;
  m.visit_parameters([&](const std::string&, nn::Parameter& p) { any |= p.var.data().dtype() == DType::bf16; });
  return any;
}

}  // namespace

PrefillPoint bench_prefill(models::LanguageModel& m, int64_t len, int64_t batch, const Ceilings& c, double min_seconds,
                           int min_trials) {
  PrefillPoint p;
  p.len = len, p.batch = batch;
  Tensor ids = random_ids(batch, len, m.config().vocab_size, 7);
  NoGradGuard g;
  int64_t base = memory_stats().live_bytes;
  reset_peak_memory();
  // A prefill for generation: every position through the blocks, logits for the last one only.
  const int64_t d = m.config().d_model;
  auto prefill = [&] {
    Tensor h = m.hidden(ids).data();
    m.logits(h.slice(1, len - 1, len).contiguous().reshape({batch, d}));
  };
  double t;
  if (min_trials > 0) {
    t = time_median(prefill, min_seconds, min_trials);
  } else {
    double t0 = now_seconds();
    prefill();
    t = now_seconds() - t0;
  }
  p.peak_bytes = memory_stats().peak_bytes - base;
  p.tokens_per_s = static_cast<double>(batch * len) / t;
  double ceiling = (has_bf16_weights(m) ? c.bf16_gflops : c.f32_gflops) * 1e9;
  p.mfu = p.tokens_per_s * m.forward_flops_per_token(len / 2, false) / ceiling;
  return p;
}

DecodePoint bench_decode(models::LanguageModel& m, int64_t context, int64_t batch, int64_t steps, const Ceilings& c) {
  DecodePoint d;
  d.context = context, d.batch = batch, d.steps = steps;
  NoGradGuard g;
  auto state = m.new_state(batch);
  m.hidden(random_ids(batch, context, m.config().vocab_size, 8), state.get());
  Tensor next = random_ids(batch, 1, m.config().vocab_size, 9);
  const int64_t dm = m.config().d_model;
  auto step = [&] { m.logits(m.hidden(next, state.get()).data().reshape({batch, dm})); };  // a generation step
  step();  // warm: the first decode step allocates per-step buffers
  nn::profile_reset();
  std::map<std::string, double> block_seconds;
  m.set_block_timer(&block_seconds);
  // Weight bytes read per step, averaged over the steps (a routed FFN reads only the experts its
  // tokens chose); counting them is kept out of the timed interval.
  double weight_bytes = 0, counting = 0;
  double t0 = now_seconds();
  for (int64_t i = 0; i < steps; ++i) {
    step();
    const double c0 = now_seconds();
    weight_bytes += m.last_step_weight_bytes();
    counting += now_seconds() - c0;
  }
  double t = now_seconds() - t0 - counting;
  weight_bytes /= static_cast<double>(std::max<int64_t>(steps, 1));
  m.set_block_timer(nullptr);
  d.tokens_per_s = static_cast<double>(batch * steps) / t;
  d.state_bytes = state->bytes() / batch;
  for (const auto& [kind, s] : block_seconds) d.us_per_token_by_layer[kind] = 1e6 * s / static_cast<double>(batch * steps);
  for (const auto& [kind, b] : state->bytes_by_kind()) d.state_bytes_by_kind[kind] = b / batch;
  double attn = nn::profile_seconds(nn::ProfileSlot::attention_decode);
  d.attention_share = attn > 0 ? attn / t : -1;
  // Per step: the weights once (shared by the batch) plus every sequence's state at this context.
  double state_read = static_cast<double>(m.state_bytes(context + steps / 2)) * batch;
  d.bytes_per_token = (weight_bytes + state_read) / static_cast<double>(batch);
  d.mbu = d.tokens_per_s * d.bytes_per_token / (c.read_gbs * 1e9);
  return d;
}

TrainPoint bench_train_step(models::LanguageModel& m, int64_t len, int64_t batch, const Ceilings& c, double min_seconds,
                            DType precision) {
  TrainPoint p;
  p.len = len, p.batch = batch, p.precision = dtype_name(precision);
  DType prev = nn::matmul_dtype();
  nn::set_matmul_dtype(precision);
  Tensor ids = random_ids(batch, len, m.config().vocab_size, 10), tgt = random_ids(batch, len, m.config().vocab_size, 11);
  train::OptimizerConfig oc;
  train::Optimizer opt(m, oc);
  int64_t base = memory_stats().live_bytes;
  reset_peak_memory();
  double t = time_median(
      [&] {
        m.zero_grad();
        m.loss(ids, tgt).backward();
        opt.step(1e-5);
      },
      min_seconds, 2);
  p.peak_bytes = memory_stats().peak_bytes - base;
  nn::set_matmul_dtype(prev);
  m.zero_grad();
  p.tokens_per_s = static_cast<double>(batch * len) / t;
  double ceiling = precision == DType::bf16 ? c.bf16_gflops : c.f32_gflops;
  p.mfu = p.tokens_per_s * 3.0 * m.forward_flops_per_token(len / 2) / (ceiling * 1e9);
  return p;
}

ModelBenchResult bench_model(models::LanguageModel& m, const std::string& preset, const ModelBenchConfig& cfg,
                             const Ceilings& c, bool progress) {
  ModelBenchResult r;
  r.preset = preset;
  r.params = m.num_parameters();
  for (int64_t batch : cfg.batches) {
    if (cfg.bf16_weights) break;
    for (int64_t len : cfg.train_lengths) {
      if (progress)
        std::fprintf(stderr, "  %s: train step B=%lld T=%lld...\n", preset.c_str(), static_cast<long long>(batch),
                     static_cast<long long>(len));
      r.train.push_back(bench_train_step(m, len, batch, c, cfg.min_seconds));
      if (cfg.train_bf16) r.train.push_back(bench_train_step(m, len, batch, c, cfg.min_seconds, DType::bf16));
    }
  }
  if (cfg.bf16_weights) m.to_bf16_weights();
  for (int64_t batch : cfg.batches) {
    for (int64_t len : cfg.prefill_lengths) {
      if (progress)
        std::fprintf(stderr, "  %s: prefill B=%lld T=%lld...\n", preset.c_str(), static_cast<long long>(batch),
                     static_cast<long long>(len));
      r.prefill.push_back(bench_prefill(m, len, batch, c, cfg.min_seconds));
    }
    for (int64_t ctx : cfg.decode_contexts) {
      if (progress)
        std::fprintf(stderr, "  %s: decode B=%lld after %lld tokens...\n", preset.c_str(), static_cast<long long>(batch),
                     static_cast<long long>(ctx));
      r.decode.push_back(bench_decode(m, ctx, batch, cfg.decode_steps, c));
    }
  }
  return r;
}

nlohmann::json to_json(const ModelBenchResult& r) {
  nlohmann::json j = {{"preset", r.preset}, {"params", r.params}};
  j["prefill"] = nlohmann::json::array();
  j["decode"] = nlohmann::json::array();
  j["train"] = nlohmann::json::array();
  for (const PrefillPoint& p : r.prefill)
    j["prefill"].push_back({{"len", p.len}, {"batch", p.batch}, {"tokens_per_s", p.tokens_per_s}, {"mfu", p.mfu},
                            {"peak_bytes", p.peak_bytes}});
  for (const DecodePoint& d : r.decode)
    j["decode"].push_back({{"context", d.context}, {"batch", d.batch}, {"tokens_per_s", d.tokens_per_s}, {"mbu", d.mbu},
                           {"bytes_per_token", d.bytes_per_token}, {"state_bytes", d.state_bytes},
                           {"attention_share", d.attention_share}, {"us_per_token_by_layer", d.us_per_token_by_layer},
                           {"state_bytes_by_kind", d.state_bytes_by_kind}});
  for (const TrainPoint& p : r.train)
    j["train"].push_back({{"len", p.len}, {"batch", p.batch}, {"precision", p.precision}, {"tokens_per_s", p.tokens_per_s}, {"mfu", p.mfu},
                          {"peak_bytes", p.peak_bytes}});
  return j;
}

std::string format_table(const ModelBenchResult& r) {
  std::ostringstream os;
  char line[200];
  std::snprintf(line, sizeof line, "%s (%.2fM parameters)\n", r.preset.c_str(), r.params / 1e6);
  os << line;
  for (const TrainPoint& p : r.train) {
    std::snprintf(line, sizeof line, "  train   B=%-3lld T=%-6lld %10.0f tok/s  MFU %5.1f%%  peak %8.1f MiB  (%s GEMMs)\n",
                  static_cast<long long>(p.batch), static_cast<long long>(p.len), p.tokens_per_s, 100 * p.mfu,
                  p.peak_bytes / 1048576.0, p.precision.c_str());
    os << line;
  }
  for (const PrefillPoint& p : r.prefill) {
    std::snprintf(line, sizeof line, "  prefill B=%-3lld T=%-6lld %10.0f tok/s  MFU %5.1f%%  peak %8.1f MiB\n",
                  static_cast<long long>(p.batch), static_cast<long long>(p.len), p.tokens_per_s, 100 * p.mfu,
                  p.peak_bytes / 1048576.0);
    os << line;
  }
  for (const DecodePoint& d : r.decode) {
    std::snprintf(line, sizeof line, "  decode  B=%-3lld ctx=%-6lld %8.1f tok/s  MBU %5.1f%%  state %8.1f KiB/seq",
                  static_cast<long long>(d.batch), static_cast<long long>(d.context), d.tokens_per_s, 100 * d.mbu,
                  d.state_bytes / 1024.0);
    os << line;
    if (d.attention_share >= 0) {
      std::snprintf(line, sizeof line, "  attention %.0f%% of time", 100 * d.attention_share);
      os << line;
    }
    os << "\n";
    if (d.us_per_token_by_layer.size() > 1 || d.state_bytes_by_kind.size() > 1) {  // hybrids: cost per layer kind
      os << "          per layer kind:";
      for (const auto& [kind, us] : d.us_per_token_by_layer) {
        std::snprintf(line, sizeof line, " %s %.1f us/token", kind.c_str(), us);
        os << line;
      }
      os << "; state";
      for (const auto& [kind, b] : d.state_bytes_by_kind) {
        std::snprintf(line, sizeof line, " %s %.1f KiB", kind.c_str(), b / 1024.0);
        os << line;
      }
      os << "\n";
    }
  }
  return os.str();
}

}  // namespace sw::bench
