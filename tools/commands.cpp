#include "tools/commands.h"

#include <map>

namespace sw::tools {
namespace {
std::map<CLI::App*, std::function<int()>>& runners() {
  static std::map<CLI::App*, std::function<int()>> r;
  return r;
}
}  // namespace

void set_runner(CLI::App* sub, std::function<int()> run) { runners()[sub] = std::move(run); }

int run_selected(CLI::App& app) {
  // The deepest parsed subcommand wins ("tokenizer train" over "tokenizer").
  for (auto& [sub, run] : runners())
    if (sub->parsed() && sub->get_subcommands().empty()) return run();
  return 2;
}

}  // namespace sw::tools
