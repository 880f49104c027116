// `speedwins bench`: the machine's ceilings (GEMM through our wrapper beside oneDNN direct, memory
// bandwidth) and, with --ops, the op table in perf mode. Writes JSON for cross-commit comparison.
#include <cstdio>
#include <fstream>

#include "bench/ceilings.h"
#include "bench/op_table.h"
#include "tools/commands.h"

namespace sw::tools {
namespace {

struct BenchArgs {
  std::string out = "bench.json";
  bool quick = false;
  bool ops = false;
};

int run_bench(const BenchArgs& a) {
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
  std::ofstream f(a.out);
  if (!f) throw Error("[bench] cannot write " + a.out);
  f << j.dump(2) << "\n";
  std::printf("wrote %s\n", a.out.c_str());
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  static BenchArgs args;
  CLI::App* sub = app.add_subcommand("bench", "Measure the machine's ceilings and the throughput of ops and models");
  sub->add_option("--out", args.out, "JSON results file")->capture_default_str();
  sub->add_flag("--quick", args.quick, "Shorter measurements (less precise)");
  sub->add_flag("--ops", args.ops, "Also time every op of the op table at realistic shapes");
  set_runner(sub, [] { return run_bench(args); });
}

}  // namespace sw::tools
