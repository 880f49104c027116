// libFuzzer target: the CLI argument layer. The input is split at newlines into argv; the parser and
// the selected subcommand's flag validation run (never the command itself). A bad flag must be a
// CLI11 ParseError or an sw::Error.
#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "tools/commands.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One app for the process: the subcommands keep their flag values in statics and register
  // validators by address, as the real binary does once.
  static CLI::App* app = [] {
    auto* a = new CLI::App("speedwins");
    a->require_subcommand(1);
    sw::tools::add_train_command(*a);
    sw::tools::add_generate_command(*a);
    sw::tools::add_inspect_command(*a);
    sw::tools::add_tokenizer_command(*a);
    return a;
  }();
  std::vector<std::string> args = {"speedwins"};
  std::string cur;
  for (size_t i = 0; i < size && args.size() < 64; ++i) {
    char ch = static_cast<char>(data[i]);
    if (ch == '\n') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) args.push_back(cur);
  std::vector<const char*> argv;
  for (const std::string& s : args) argv.push_back(s.c_str());
  try {
    app->parse(static_cast<int>(argv.size()), argv.data());
    sw::tools::validate_selected(*app);
  } catch (const CLI::Error&) {
  } catch (const sw::Error&) {
  }
  return 0;
}
