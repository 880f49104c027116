// `speedwins bench`: the machine's ceilings (GEMM through our wrapper beside oneDNN direct, memory
// bandwidth); with --ops the op table in perf mode; with --preset the throughput of models
// (prefill, decode, training step) as MFU/MBU against those ceilings. Writes JSON; --compare shows
// the change between two such files.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/bounded_json.h"
#include "bench/attention_bench.h"
#include "bench/ceilings.h"
#include "bench/model_bench.h"
#include "bench/moe_bench.h"
#include "bench/op_table.h"
#include "bench/sparse_bench.h"
#include "infer/kv_policy_eval.h"
#include "models/model_limits.h"
#include "models/presets.h"
#include "tools/cli_common.h"
#include "tools/commands.h"

namespace sw::tools {
namespace {

struct BenchArgs {
  std::string out = "bench.json";
  bool quick = false, ops = false, bf16_weights = false, no_bf16_train = false;
  nn::KvPolicyConfig kv;  // applied to every attention layer of the benchmarked presets
  std::vector<std::string> presets, compare;
  std::vector<int64_t> prefill = {512, 4096}, decode = {512, 4096}, train = {512};
  std::vector<int64_t> batches = {1};
  std::vector<int64_t> attention;  // prefill lengths of the attention-kernel workload (flash fp32 vs Sage int8)
  CLI::Option* attention_opt = nullptr;
  std::vector<int64_t> moe;  // batch tokens of the MoE-vs-dense FFN training workload
  CLI::Option* moe_opt = nullptr;
  std::string moe_preset = "moe-100m";
  std::vector<int64_t> sparse;  // lengths of the block-sparse vs dense attention workload
  CLI::Option* sparse_opt = nullptr;
  double sparse_density = 0.10;
  int64_t decode_steps = 32;
};


// Prints every numeric leaf present in both files with its relative change.
void compare_json(const nlohmann::json& a, const nlohmann::json& b, const std::string& path) {
  if (a.is_number() && b.is_number()) {
    double x = a.get<double>(), y = b.get<double>();
    if (x != 0 || y != 0)
      std::printf("  %-64s %14.4g %14.4g %+8.1f%%\n", path.c_str(), x, y, x != 0 ? 100.0 * (y - x) / std::fabs(x) : 0.0);
  } else if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it)
      if (b.contains(it.key())) compare_json(it.value(), b[it.key()], path.empty() ? it.key() : path + "." + it.key());
  } else if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      // Label array items by their identifying field where there is one.
      std::string label = std::to_string(i);
      for (const char* key : {"preset", "name", "len", "context"})
        if (a[i].is_object() && a[i].contains(key)) label = a[i][key].is_string() ? a[i][key].get<std::string>() : a[i][key].dump();
      compare_json(a[i], b[i], path + "[" + label + "]");
    }
  }
}

int run_bench(const BenchArgs& a) {
  if (!a.compare.empty()) {
    SW_CHECK(a.compare.size() == 2, "bench", "--compare takes two JSON files, got ", a.compare.size());
    const nlohmann::json before = read_json_file(a.compare[0]), after = read_json_file(a.compare[1]);
    std::printf("  %-64s %14s %14s %9s\n", "metric", a.compare[0].c_str(), a.compare[1].c_str(), "change");
    compare_json(before, after, "");
    return 0;
  }
  // A list option given must hold numbers in range: CLI11 drops empty items, so `--x ''` is caught here.
  auto given_list = [](CLI::Option* opt, const std::vector<int64_t>& values, const char* flag, const char* what,
                       const char* example) {
    const bool given = opt && opt->count() > 0;
    bool blank = given && values.empty();
    if (given)
      for (const std::string& r : opt->results()) blank |= r.empty();
    SW_CHECK(!blank, "bench", flag, " needs a comma-separated list of ", what, ", e.g. ", flag, " ", example);
    for (int64_t v : values)
      SW_CHECK(v > 0 && v <= (1 << 20), "bench", flag, ": ", what, " must be in [1, 1048576], got ", v);
    return given;
  };
  const bool attention = given_list(a.attention_opt, a.attention, "--attention", "sequence lengths", "1024,2048,4096");
  const bool moe = given_list(a.moe_opt, a.moe, "--moe", "batch token counts", "2048,4096");
  const bool sparse = given_list(a.sparse_opt, a.sparse, "--sparse", "sequence lengths", "16384");
  SW_CHECK(std::isfinite(a.sparse_density) && a.sparse_density > 0 && a.sparse_density <= 1, "bench",
           "--sparse-density ", a.sparse_density, ": expected a number in (0, 1]");
  std::fprintf(stderr, "measuring ceilings (GEMM table, memory bandwidth)...\n");
  bench::Ceilings c = bench::measure_ceilings(a.quick);
  std::printf("%s", bench::format_table(c).c_str());
  nlohmann::json j;
  j["ceilings"] = bench::to_json(c);
  if (a.ops) {
    std::printf("\nOp table, perf mode (realistic shapes; GFLOP/s and GB/s of the forward)\n");
    std::printf("  %-40s %10s %12s %9s %8s %9s\n", "op", "fwd ms", "fwd+bwd ms", "GFLOP/s", "GB/s", "%f32 peak");
    std::vector<bench::OpCase> cases = bench::op_cases(1);
    for (size_t i = 0; i < cases.size(); ++i) {
      std::fprintf(stderr, "\r[%zu/%zu] %s            ", i + 1, cases.size(), cases[i].name.c_str());
      bench::PerfResult r = bench::run_perf(cases[i], a.quick ? 0.05 : 0.2);
      std::printf("  %-40s %10.3f %12.3f %9.1f %8.1f %8.1f%%\n", cases[i].name.c_str(), r.seconds_fwd * 1e3,
                  r.seconds_fwd_bwd * 1e3, r.gflops, r.gbs, 100.0 * r.gflops / c.f32_gflops);
      j["ops"].push_back({{"name", cases[i].name}, {"fwd_s", r.seconds_fwd}, {"fwd_bwd_s", r.seconds_fwd_bwd},
                          {"gflops", r.gflops}, {"gbs", r.gbs}});
    }
    std::fprintf(stderr, "\n");
  }
  if (attention) {
    bench::AttentionBenchConfig ac;
    ac.lengths = a.attention;
    ac.min_seconds = a.quick ? 0.2 : 1.0;
    std::vector<bench::AttentionBenchPoint> r = bench::bench_attention(ac, c, true);
    std::printf("\n%s", bench::format_table(r).c_str());
    j["attention"] = bench::to_json(r);
  }
  if (moe) {
    bench::MoeBenchConfig bc;
    bc.preset = a.moe_preset, bc.tokens = a.moe;
    bc.min_seconds = a.quick ? 0.3 : 2.0;
    std::vector<bench::MoeBenchPoint> r = bench::bench_moe(bc, c, true);
    std::printf("\n%s", bench::format_table(r).c_str());
    j["moe"] = bench::to_json(r);
  }
  if (sparse) {
    for (int64_t len : a.sparse) {
      bench::SparseBenchConfig sc;
      sc.len = len, sc.density = a.sparse_density;
      bench::SparseBenchResult r = bench::bench_sparse_attention(sc, true);
      std::printf("\n%s", bench::format_table(r).c_str());
      j["sparse_attention"].push_back(bench::to_json(r));
    }
  }
  bench::ModelBenchConfig mc;
  mc.prefill_lengths = a.prefill, mc.decode_contexts = a.decode, mc.train_lengths = a.train;
  mc.batches = a.batches, mc.decode_steps = a.decode_steps, mc.bf16_weights = a.bf16_weights;
  mc.train_bf16 = !a.no_bf16_train;
  mc.min_seconds = a.quick ? 0.05 : 0.3;
  for (const std::string& p : a.presets) {
    const models::ModelConfig preset = models::resolve_preset(p);
    std::unique_ptr<models::LanguageModel> m =
        models::build_model(a.kv.active() ? infer::with_kv_policy(preset, a.kv) : preset, p);
    bench::ModelBenchResult r = bench::bench_model(*m, p, mc, c, true);
    std::printf("\n%s", bench::format_table(r).c_str());
    j["models"].push_back(bench::to_json(r));
  }
  std::ofstream f(a.out);
  SW_CHECK(f.good(), "bench", "cannot write ", a.out);
  f << j.dump(2) << "\n";
  std::printf("wrote %s\n", a.out.c_str());
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  static BenchArgs a;
  CLI::App* s = app.add_subcommand("bench", "Measure the machine's ceilings and the throughput of ops and models");
  s->add_option("--out", a.out, "JSON results file")->capture_default_str();
  s->add_flag("--quick", a.quick, "Shorter measurements (less precise)");
  s->add_flag("--ops", a.ops, "Also time every op of the op table at realistic shapes");
  s->add_option("--preset", a.presets, "Benchmark this preset or config file (repeatable)");
  s->add_option("--prefill", a.prefill, "Prefill lengths")->delimiter(',')->capture_default_str();
  s->add_option("--decode", a.decode, "Decode contexts")->delimiter(',')->capture_default_str();
  s->add_option("--train", a.train, "Training-step lengths (empty with --train '')")->delimiter(',')->capture_default_str();
  s->add_option("--batch", a.batches, "Batch sizes")->delimiter(',')->capture_default_str();
  a.attention_opt = s->add_option("--attention", a.attention,
                 "Also time attention prefill, fp32 flash vs int8 Sage, at these lengths (B=1, causal, D=64, "
                 "Hq/Hkv 8/8 and 8/2): --attention 1024,2048,4096")
      ->delimiter(',');
  a.moe_opt = s->add_option("--moe", a.moe,
                             "Also time an MoE FFN training step (fwd + bwd) against the dense SwiGLU of equal "
                             "active parameters at these batch token counts: --moe 2048,4096")
                  ->delimiter(',');
  a.sparse_opt = s->add_option("--sparse", a.sparse,
                                "Also time block-sparse attention (a layout keeping --sparse-density of the causal "
                                "block pairs) against dense causal attention at these lengths: --sparse 16384")
                     ->delimiter(',');
  s->add_option("--sparse-density", a.sparse_density, "Fraction of causal block pairs --sparse keeps")
      ->capture_default_str();
  s->add_option("--moe-preset", a.moe_preset, "Preset (or config) whose MoE `ffn` --moe times")->capture_default_str();
  add_kv_policy_flags(s, a.kv);
  s->add_option("--decode-steps", a.decode_steps, "Decode steps timed per context")->capture_default_str();
  s->add_flag("--bf16-weights", a.bf16_weights, "Run prefill/decode with bf16 weights (skips the training step)");
  s->add_flag("--no-bf16-train", a.no_bf16_train, "Time the training step with f32 GEMMs only");
  s->add_option("--compare", a.compare, "Compare two bench JSON files: --compare A.json B.json")->expected(2);
  set_runner(s, [] { return run_bench(a); });
}

}  // namespace sw::tools
