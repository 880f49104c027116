// speedwins: one binary, one subcommand per job. Each subcommand lives in its own file
// (tools/cmd_<name>.cpp) and registers itself here.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "core/error.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"speedwins: efficient LLM architectures, trained, run and measured side by side on a CPU"};
  app.require_subcommand(1);
  sw::tools::add_arena_command(app);
  sw::tools::add_train_command(app);
  sw::tools::add_generate_command(app);
  sw::tools::add_inspect_command(app);
  sw::tools::add_tokenizer_command(app);
  sw::tools::add_bench_command(app);
  sw::tools::add_convert_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return sw::tools::run_selected(app);
  } catch (const sw::Error& e) {
    std::fprintf(stderr, "speedwins: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "speedwins: error: %s\n", e.what());
    return 1;
  }
}
