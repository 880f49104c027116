// `speedwins kv-policies`: the training-free KV-cache policies (nn/attention/kv_policy.h) side by side
// on one trained attention checkpoint, at several compression ratios: held-out perplexity scored
// through the cache (the second half of each window decoded token by token), needle (passkey)
// retrieval, and the cache bytes held per sequence, each beside the full cache. Prints a markdown
// table (and, with --out, writes the rows as JSON).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "core/error.h"
#include "core/timer.h"
#include "infer/kv_policy_eval.h"
#include "io/atomic_file.h"
#include "tools/cli_common.h"
#include "tools/commands.h"

namespace sw::tools {
namespace {

struct KvArgs {
  std::string checkpoint, data = "brown", out;
  std::vector<std::string> policies = {"streaming", "h2o", "tova", "snapkv", "quest"};
  std::vector<int64_t> ratios = {4, 8};
  int64_t seq_len = 512, windows = 16, needle_len = 512, probes = 24;
  uint64_t seed = 1;
};

void validate_kv(const KvArgs& a) {
  SW_CHECK(a.seq_len >= 16 && a.seq_len <= (1 << 16), "kv-policies", "--seq-len ", a.seq_len,
           ": expected an integer in [16, 65536]");
  SW_CHECK(a.windows >= 1 && a.windows <= 4096, "kv-policies", "--windows ", a.windows, ": expected 1..4096");
  SW_CHECK(a.needle_len == 0 || (a.needle_len >= 64 && a.needle_len <= (1 << 16)), "kv-policies", "--needle ",
           a.needle_len, ": expected 0 (off) or 64..65536 tokens");
  SW_CHECK(a.probes >= 1 && a.probes <= 4096, "kv-policies", "--probes ", a.probes, ": expected 1..4096");
  SW_CHECK(!a.policies.empty() && !a.ratios.empty(), "kv-policies", "--policies and --ratios must not be empty");
  for (int64_t r : a.ratios)
    SW_CHECK(r >= 2 && r <= a.seq_len / 4, "kv-policies", "--ratios ", r, ": expected 2..seq_len/4 (", a.seq_len / 4,
             ")");
  for (const std::string& p : a.policies) {
    nn::KvPolicyConfig c;
    c.policy = p, c.budget = a.seq_len;
    nn::validate_kv_policy(c, "--policies");
    SW_CHECK(c.active(), "kv-policies", "--policies: 'full' is the baseline row, always measured");
  }
}

struct Row {
  std::string policy;
  int64_t ratio = 1, budget = 0;
  infer::CachedLossResult loss;
  infer::NeedleResult needle;
  double seconds = 0;
};

int run_kv(const KvArgs& a) {
  const Loaded base = load_run(a.checkpoint);
  train::TextSource text = train::load_text_source(a.data);
  EncodedText enc = encode_text(*base.tok, text.text);
  train::TokenDataset data(std::move(enc.tokens), 0.05, base.tok->vocab_size());
  const std::span<const int32_t> held_out = data.validation();
  auto encode = [&](const std::string& s) { return base.tok->encode(s); };

  std::vector<std::pair<std::string, int64_t>> plan = {{"full", 1}};
  for (int64_t r : a.ratios)
    for (const std::string& p : a.policies) plan.push_back({p, r});
  std::vector<Row> rows;
  for (size_t i = 0; i < plan.size(); ++i) {
    Row row;
    row.policy = plan[i].first, row.ratio = plan[i].second;
    nn::KvPolicyConfig c;
    c.policy = row.policy;
    // Perplexity windows and needle probes are compressed by the same ratio of their own length.
    auto run_with_budget = [&](int64_t length) {
      c.budget = row.policy == "full" ? 0 : length / row.ratio;
      c.window = std::min<int64_t>(c.window, std::max<int64_t>(1, c.budget / 4));
      c.page = std::min<int64_t>(c.page, c.budget ? c.budget : c.page);
      return load_run(a.checkpoint, c);
    };
    std::fprintf(stderr, "\r\033[K[%zu/%zu] %s at %lldx ...", i + 1, plan.size(), row.policy.c_str(),
                 static_cast<long long>(row.ratio));
    std::fflush(stderr);
    const double t0 = now_seconds();
    {
      Loaded l = run_with_budget(a.seq_len);
      row.budget = c.budget;
      row.loss = infer::cached_loss(*l.model, held_out, a.seq_len, a.seq_len / 2, a.windows);
    }
    if (a.needle_len) {
      Loaded l = run_with_budget(a.needle_len);
      row.needle = infer::needle_probe(*l.model, held_out, encode, a.needle_len, a.probes, a.seed);
    }
    row.seconds = now_seconds() - t0;
    rows.push_back(row);
  }
  std::fprintf(stderr, "\r\033[K");

  const Row& full = rows.front();
  std::printf("KV-cache policies on %s (held-out %s: %lld windows of %lld tokens, last %lld scored by decode; "
              "needle: %lld probes of %lld tokens)\n\n",
              a.checkpoint.c_str(), text.name.c_str(), static_cast<long long>(a.windows),
              static_cast<long long>(a.seq_len), static_cast<long long>(a.seq_len / 2),
              static_cast<long long>(a.probes), static_cast<long long>(a.needle_len));
  std::printf("| policy | compression | budget | perplexity | vs full | needle acc | KV bytes/seq | saved | s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  nlohmann::json out = nlohmann::json::array();
  for (const Row& r : rows) {
    const double saved = 1.0 - static_cast<double>(r.loss.cache_bytes) / static_cast<double>(full.loss.cache_bytes);
    std::printf("| %s | %s | %s | %.3f | %+.1f%% | %s | %s | %.0f%% | %.1f |\n", r.policy.c_str(),
                r.policy == "full" ? "1x" : str_cat(r.ratio, "x").c_str(),
                r.policy == "full" ? "all" : str_cat(r.budget).c_str(), r.loss.perplexity,
                100.0 * (r.loss.perplexity / full.loss.perplexity - 1.0),
                a.needle_len ? str_cat(static_cast<int>(100 * r.needle.accuracy + 0.5), "%").c_str() : "-",
                format_bytes(r.loss.cache_bytes).c_str(), 100.0 * saved, r.seconds);
    out.push_back({{"policy", r.policy}, {"ratio", r.ratio}, {"budget", r.budget}, {"loss", r.loss.loss},
                   {"perplexity", r.loss.perplexity}, {"scored_tokens", r.loss.tokens},
                   {"cache_bytes", r.loss.cache_bytes}, {"needle_accuracy", r.needle.accuracy},
                   {"needle_probes", r.needle.probes}, {"seconds", r.seconds}});
  }
  if (!a.out.empty()) io::write_file_atomic(a.out, out.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_kv_policy_command(CLI::App& app) {
  static KvArgs a;
  CLI::App* s = app.add_subcommand("kv-policies", "Compare KV-cache policies on a trained attention checkpoint");
  s->add_option("--checkpoint", a.checkpoint, "checkpoint.safetensors of an attention model")->required();
  s->add_option("--data", a.data, "brown | synthetic | a text file or folder (its validation split)")
      ->capture_default_str();
  s->add_option("--policies", a.policies, "Policies to compare with the full cache")->delimiter(',')
      ->capture_default_str();
  s->add_option("--ratios", a.ratios, "Compression ratios: budget = length / ratio")->delimiter(',')
      ->capture_default_str();
  s->add_option("--seq-len", a.seq_len, "Tokens per perplexity window")->capture_default_str();
  s->add_option("--windows", a.windows, "Held-out windows scored")->capture_default_str();
  s->add_option("--needle", a.needle_len, "Tokens per needle probe (0 = no needle probe)")->capture_default_str();
  s->add_option("--probes", a.probes, "Needle probes")->capture_default_str();
  s->add_option("--seed", a.seed, "Needle keys and placement")->capture_default_str();
  s->add_option("--out", a.out, "Also write the rows as JSON here");
  set_runner(s, [] { return run_kv(a); });
  set_validator(s, [] { validate_kv(a); });
}

}  // namespace sw::tools
