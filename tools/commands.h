// Registration of the CLI's subcommands. Each add_* declares its flags once and stores a runner;
// run_selected() calls the runner of the subcommand the user picked.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace sw::tools {

void add_bench_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);  // generate and eval
void add_inspect_command(CLI::App& app);   // inspect and presets
void add_tokenizer_command(CLI::App& app);
void add_arena_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_kv_policy_command(CLI::App& app);  // kv-policies

// Called by add_* to attach the function that runs a parsed subcommand.
void set_runner(CLI::App* sub, std::function<int()> run);
int run_selected(CLI::App& app);
// Optional: checks a parsed subcommand's flag values (ranges) without doing any work; main() runs it
// before the runner, and the CLI fuzz target runs only this.
void set_validator(CLI::App* sub, std::function<void()> validate);
void validate_selected(CLI::App& app);

}  // namespace sw::tools
