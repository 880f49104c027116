#include "bench/arena.h"

#include "models/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "bench/ceilings.h"
#include "bench/model_bench.h"
#include "bench/report.h"
#include "core/timer.h"
#include "io/atomic_file.h"
#include "io/tokenizer.h"
#include "models/model_limits.h"
#include "models/presets.h"
#include "models/schedule.h"
#include "train/mqar.h"
#include "train/text_source.h"
#include "train/trainer.h"

namespace sw::bench {
namespace {

// MQAR settings (Zoology: recall gets harder with more pairs and longer sequences).
struct MqarSetting {
  int64_t pairs, seq_len;
};
const std::vector<MqarSetting> kMqarSettings = {{4, 64}, {8, 64}, {16, 128}};
constexpr int64_t kMqarVocab = 256;

// Trains a copy of the architecture on MQAR (its own vocabulary) and returns the accuracy per setting.
nlohmann::json run_mqar(const models::ModelConfig& base, int64_t steps, int64_t seed, bool progress) {
  models::ModelConfig cfg = base;
  cfg.vocab_size = kMqarVocab;
  std::unique_ptr<models::LanguageModel> built = models::build_model(cfg, base.name + " (mqar)");
  models::LanguageModel& model = *built;
  train::OptimizerConfig oc;
  oc.weight_decay = 0.0;
  train::Optimizer opt(model, oc);
  train::ScheduleConfig sc;
  sc.lr = 3e-3, sc.warmup_steps = std::max<int64_t>(1, steps / 10);
  std::vector<train::MqarData> train_sets, test_sets;
  for (size_t i = 0; i < kMqarSettings.size(); ++i) {
    train::MqarConfig mc;
    mc.vocab_size = kMqarVocab, mc.num_kv_pairs = kMqarSettings[i].pairs, mc.seq_len = kMqarSettings[i].seq_len;
    mc.num_examples = 2048, mc.seed = static_cast<uint64_t>(seed * 100 + i);
    train_sets.push_back(train::generate_mqar(mc));
    mc.num_examples = 128, mc.seed += 50;
    test_sets.push_back(train::generate_mqar(mc));
  }
  const int64_t batch = 16;
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  for (int64_t step = 0; step < steps; ++step) {
    // Round-robin over settings (their lengths differ, so each batch holds one setting).
    const train::MqarData& d = train_sets[step % train_sets.size()];
    int64_t n = d.inputs.dim(0), start = static_cast<int64_t>(train::uniform_below(rng, n - batch + 1));
    Tensor x = d.inputs.slice(0, start, start + batch).contiguous(), y = d.targets.slice(0, start, start + batch).contiguous();
    model.zero_grad();
    Variable loss = model.loss(x, y);
    loss.backward();
    opt.step(train::learning_rate(sc, step, steps));
    if (progress && (step + 1) % 25 == 0)
      std::fprintf(stderr, "\r  mqar step %lld/%lld | loss %.3f      ", static_cast<long long>(step + 1),
                   static_cast<long long>(steps), loss.item());
  }
  if (progress) std::fprintf(stderr, "\n");
  nlohmann::json out = nlohmann::json::array();
  NoGradGuard g;
  for (size_t i = 0; i < kMqarSettings.size(); ++i) {
    const train::MqarData& d = test_sets[i];
    int64_t n = d.inputs.dim(0), t = d.inputs.dim(1);
    Tensor h = model.hidden(d.inputs).data();
    Tensor logits = model.logits(h.reshape({n * t, cfg.d_model}));
    std::vector<int32_t> pred(n * t);
    const float* l = logits.data<float>();
    for (int64_t r = 0; r < n * t; ++r)
      pred[r] = static_cast<int32_t>(std::max_element(l + r * kMqarVocab, l + (r + 1) * kMqarVocab) - (l + r * kMqarVocab));
    double acc = train::mqar_accuracy(Tensor::from_vector(pred, {n, t}), d.targets);
    out.push_back({{"pairs", kMqarSettings[i].pairs}, {"seq_len", kMqarSettings[i].seq_len}, {"accuracy", acc},
                   {"state_bytes", model.state_bytes(kMqarSettings[i].seq_len)}});
  }
  return out;
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

nlohmann::json run_arena(const ArenaConfig& cfg) {
  SW_CHECK(cfg.budget > 0, "arena", "--budget must be positive, got ", cfg.budget);
  std::vector<std::string> presets = cfg.presets.empty() ? models::preset_names(cfg.size) : cfg.presets;
  SW_CHECK(!presets.empty(), "arena", "no presets of size '", cfg.size, "' are registered");
  std::filesystem::create_directories(cfg.out_dir);
  double t_start = now_seconds();
  if (cfg.progress) std::fprintf(stderr, "arena: measuring the machine's ceilings...\n");
  Ceilings ceil = measure_ceilings(true);
  train::TextSource text = train::load_text_source(cfg.data, 4 << 20, !cfg.progress);
  train::TokenDataset data(io::ByteTokenizer().encode(text.text), 0.05, io::ByteTokenizer::kVocab);
  int64_t steps = std::max<int64_t>(10, static_cast<int64_t>(cfg.budget * cfg.train_tokens / (cfg.batch * cfg.seq_len)));
  int64_t mqar_steps = std::max<int64_t>(10, static_cast<int64_t>(cfg.budget * cfg.mqar_steps));
  std::vector<int64_t> lengths = cfg.lengths;
  nlohmann::json results;
  results["meta"] = {{"created", iso_now()},
                     {"corpus", text.name},
                     {"budget_tokens", steps * cfg.batch * cfg.seq_len},
                     {"budget", cfg.budget},
                     {"seed", cfg.seed},
                     {"ceilings", to_json(ceil)}};
  results["models"] = nlohmann::json::array();
  for (size_t pi = 0; pi < presets.size(); ++pi) {
    const std::string& name = presets[pi];
    double elapsed = now_seconds() - t_start;
    double eta = pi ? elapsed / pi * (presets.size() - pi) : 0;
    if (cfg.progress)
      std::fprintf(stderr, "\n[%zu/%zu] %s (elapsed %.0fs%s)\n", pi + 1, presets.size(), name.c_str(), elapsed,
                   pi ? (", ETA " + std::to_string(static_cast<int>(eta)) + "s").c_str() : "");
    models::ModelConfig mc = models::resolve_preset(name);
    nlohmann::json entry = {{"preset", name}, {"family", mc.family}, {"mixer", models::describe_schedule(mc)}};
    {
      std::unique_ptr<models::LanguageModel> built = models::build_model(mc, name);
      models::LanguageModel& model = *built;
      entry["params"] = model.num_parameters();
      entry["active_params"] = model.active_parameters();  // MoE: compared with dense at equal active size
      train::TrainConfig tc;
      tc.steps = steps, tc.batch = cfg.batch, tc.seq_len = cfg.seq_len, tc.seed = cfg.seed;
      tc.eval_every = 0, tc.eval_batches = 32, tc.log_every = std::max<int64_t>(1, steps / 50);
      tc.schedule.lr = cfg.lr, tc.schedule.warmup_steps = std::max<int64_t>(1, steps / 20);
      train::TrainerOptions to;
      to.progress = cfg.progress;
      train::TrainResult tr = train::Trainer(model, data, tc, to).run();
      nlohmann::json curve = nlohmann::json::array();
      size_t stride = std::max<size_t>(1, tr.losses.size() / 100);
      for (size_t i = 0; i < tr.losses.size(); i += stride) curve.push_back({tr.losses[i].first, tr.losses[i].second});
      const train::EvalResult& ev = tr.evals.back().second;
      entry["train"] = {{"tokens", tr.tokens}, {"seconds", tr.seconds}, {"tokens_per_s", tr.tokens_per_second},
                        {"mfu", tr.mfu}, {"loss_curve", curve}};
      entry["quality"] = {{"val_loss", ev.loss}, {"val_bpb", ev.bits_per_byte}, {"val_ppl", ev.perplexity}};
      // Throughput and memory over lengths, on the trained weights.
      if (cfg.progress) std::fprintf(stderr, "  measuring throughput at %zu lengths...\n", lengths.size());
      entry["prefill"] = nlohmann::json::array();
      entry["decode"] = nlohmann::json::array();
      entry["memory"] = nlohmann::json::array();
      entry["state_bytes"] = nlohmann::json::array();
      for (int64_t len : lengths) {
        PrefillPoint p = bench_prefill(model, len, 1, ceil, 0.05, len >= 4096 ? 0 : 3);
        entry["prefill"].push_back({{"len", len}, {"tokens_per_s", p.tokens_per_s}, {"mfu", p.mfu}});
        entry["memory"].push_back({{"len", len}, {"peak_bytes", p.peak_bytes}});
        DecodePoint d = bench_decode(model, len, 1, cfg.decode_steps, ceil);
        entry["decode"].push_back({{"context", len}, {"tokens_per_s", d.tokens_per_s}, {"mbu", d.mbu}});
      }
      for (int64_t len : {int64_t{64}, int64_t{128}, int64_t{512}, int64_t{4096}, int64_t{16384}})
        entry["state_bytes"].push_back(
            {{"context", len}, {"bytes", model.state_bytes(len)}, {"by_kind", model.state_bytes_by_kind(len)}});
    }
    if (cfg.progress) std::fprintf(stderr, "  MQAR (%lld steps)...\n", static_cast<long long>(mqar_steps));
    entry["mqar"] = run_mqar(mc, mqar_steps, cfg.seed, cfg.progress);
    results["models"].push_back(entry);
    // Results so far are written after every preset, so a long run that is stopped keeps them.
    io::write_file_atomic(cfg.out_dir + "/results.json", results.dump(2) + "\n");
  }
  results["meta"]["seconds"] = now_seconds() - t_start;
  io::write_file_atomic(cfg.out_dir + "/results.json", results.dump(2) + "\n");
  write_report(cfg.out_dir + "/report.html", results, cfg.out_dir + "/results.json");
  return results;
}

std::string arena_table(const nlohmann::json& results) {
  std::ostringstream os;
  char line[400];
  const nlohmann::json& models = results.at("models");
  std::vector<int64_t> lengths;
  if (!models.empty())
    for (const auto& p : models[0]["prefill"]) lengths.push_back(p["len"].get<int64_t>());
  std::snprintf(line, sizeof line, "%-24s %-10s %8s %8s %9s %8s %8s", "preset", "family", "params", "active", "val loss", "bpb", "MQAR");
  os << line;
  for (int64_t l : lengths) {
    std::snprintf(line, sizeof line, " %10s", ("pre@" + std::to_string(l)).c_str());
    os << line;
  }
  for (int64_t l : lengths) {
    std::snprintf(line, sizeof line, " %10s", ("dec@" + std::to_string(l)).c_str());
    os << line;
  }
  std::snprintf(line, sizeof line, " %12s\n", "state@16k");
  os << line;
  for (const auto& m : models) {
    double mq = 0;
    for (const auto& q : m["mqar"]) mq += q["accuracy"].get<double>();
    mq /= std::max<size_t>(1, m["mqar"].size());
    std::snprintf(line, sizeof line, "%-24s %-10s %7.2fM %7.2fM %9.4f %8.4f %7.1f%%", m["preset"].get<std::string>().c_str(),
                  m["family"].get<std::string>().c_str(), m["params"].get<double>() / 1e6,
                  m.value("active_params", m["params"].get<double>()) / 1e6,
                  m["quality"]["val_loss"].get<double>(), m["quality"]["val_bpb"].get<double>(), 100 * mq);
    os << line;
    for (const auto& p : m["prefill"]) {
      std::snprintf(line, sizeof line, " %10.0f", p["tokens_per_s"].get<double>());
      os << line;
    }
    for (const auto& d : m["decode"]) {
      std::snprintf(line, sizeof line, " %10.1f", d["tokens_per_s"].get<double>());
      os << line;
    }
    double st = 0;
    for (const auto& s : m["state_bytes"])
      if (s["context"].get<int64_t>() == 16384) st = s["bytes"].get<double>();
    std::snprintf(line, sizeof line, " %10.1fKiB\n", st / 1024);
    os << line;
  }
  os << "(pre@L: prefill tokens/s at length L; dec@L: decode tokens/s after L tokens of context; MQAR: mean accuracy)\n";
  return os.str();
}

}  // namespace sw::bench
