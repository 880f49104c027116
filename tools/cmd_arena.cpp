// `speedwins arena`: the main job. Trains every registered preset of a size class on the same data
// and budget, measures quality, recall, throughput and memory, and writes a table, results.json and
// a self-contained HTML report.
#include <cstdio>

#include "bench/arena.h"
#include "tools/commands.h"

namespace sw::tools {

void add_arena_command(CLI::App& app) {
  static bench::ArenaConfig c;
  CLI::App* s = app.add_subcommand("arena", "Train and measure every preset of a size side by side (the main job)");
  s->add_option("--presets", c.presets, "Presets to compare (default: every preset of --size)")->delimiter(',');
  s->add_option("--size", c.size, "Size class of the default presets")->capture_default_str();
  s->add_option("--data", c.data, "brown | synthetic | a text file or folder")->capture_default_str();
  s->add_option("--budget", c.budget, "Scales training tokens and MQAR steps (1 = 500k LM tokens and 250 MQAR steps per preset)")
      ->capture_default_str();
  s->add_option("--lengths", c.lengths, "Prefill lengths and decode contexts")->delimiter(',')->capture_default_str();
  s->add_option("--seed", c.seed, "Seed for data order and initialisation")->capture_default_str();
  s->add_option("--out", c.out_dir, "Output folder (results.json, report.html)")->capture_default_str();
  set_runner(s, [] {
    nlohmann::json r = bench::run_arena(c);
    std::printf("\n%s", bench::arena_table(r).c_str());
    std::printf("results: %s/results.json\nreport:  %s/report.html\n", c.out_dir.c_str(), c.out_dir.c_str());
    return 0;
  });
}

}  // namespace sw::tools
