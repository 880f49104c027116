#include "tools/commands.h"

#include <map>

namespace sw::tools {
namespace {
std::map<CLI::App*, std::function<int()>>& runners() {
  static std::map<CLI::App*, std::function<int()>> r;
  return r;
}
std::map<CLI::App*, std::function<void()>>& validators() {
  static std::map<CLI::App*, std::function<void()>> v;
  return v;
}
}  // namespace

void set_validator(CLI::App* sub, std::function<void()> validate) { validators()[sub] = std::move(validate); }

void validate_selected(CLI::App& app) {
  for (auto& [sub, validate] : validators())
    if (sub->parsed() && sub->get_subcommands().empty()) validate();
}

void set_runner(CLI::App* sub, std::function<int()> run) { runners()[sub] = std::move(run); }

int run_selected(CLI::App& app) {
  // The deepest parsed subcommand wins ("tokenizer train" over "tokenizer").
  for (auto& [sub, run] : runners())
    if (sub->parsed() && sub->get_subcommands().empty()) return run();
  return 2;
}

}  // namespace sw::tools
