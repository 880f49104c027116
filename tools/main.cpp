// speedwins: one binary, one subcommand per job. Each subcommand lives in its own file
// (tools/cmd_<name>.cpp) and registers itself here.
//
// Exit status: 0 success; 1 a reported error (bad input, refused sizes, I/O); 128 + signal when
// training was stopped by SIGINT (130) or SIGTERM (143) after saving its checkpoint.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>

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
  sw::tools::add_kv_policy_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a ParseError with status 0; every bad flag or value is a reported error: status 1.
    return app.exit(e) == 0 ? 0 : 1;
  }
  try {
    sw::tools::validate_selected(app);
    return sw::tools::run_selected(app);
  } catch (const sw::Error& e) {
    std::fprintf(stderr, "speedwins: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "speedwins: error: out of memory (README: Resource limits)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "speedwins: error: %s\n", e.what());
    return 1;
  }
}
