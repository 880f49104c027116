// `speedwins inspect`: what a checkpoint (or any safetensors file) holds: its config, parameter
// count per module, dtypes and sizes. `speedwins presets`: the registered presets.
#include <algorithm>
#include <cstdio>
#include <map>

#include "core/bounded_json.h"
#include "io/safetensors.h"
#include "models/language_model.h"
#include "models/model_limits.h"
#include "models/presets.h"
#include "models/registry.h"
#include "models/schedule.h"
#include "tools/commands.h"

namespace sw::tools {
namespace {

int run_inspect(const std::string& path, bool all) {
  io::SafetensorsFile f = io::load_safetensors(path);
  std::printf("%s: %zu tensors, header %llu bytes\n", path.c_str(), f.tensors.size(),
              static_cast<unsigned long long>(f.header_bytes));
  auto cfg = f.metadata.find("config");
  if (cfg != f.metadata.end()) {
    // Bounded parse: a deeply nested crafted config must not overflow the stack in dump().
    nlohmann::json j;
    try {
      j = parse_json_bounded(cfg->second, path + ": metadata 'config'");
    } catch (const Error& e) {
      j = nlohmann::json(nlohmann::json::value_t::discarded);
      std::printf("config: (%s)\n", e.what());
    }
    if (!j.is_discarded()) std::printf("config:\n%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    if (!j.is_discarded()) {
      try {  // the schedule as people read it; a config that does not parse was shown above as is
        std::printf("schedule: %s\n", models::describe_schedule(models::parse_model_config(j, path)).c_str());
      } catch (const Error& e) {
        std::printf("schedule: (config does not parse: %s)\n", e.what());
      }
    }
  }
  auto ts = f.metadata.find("train_state");
  if (ts != f.metadata.end()) {
    nlohmann::json j;
    try {
      j = parse_json_bounded(ts->second, path + ": metadata 'train_state'");
    } catch (const Error& e) {
      std::printf("train_state: (%s)\n", e.what());
    }
    if (j.is_object()) {
      auto count = [&](const char* k) -> long long {
        auto it = j.find(k);
        return it != j.end() && it->is_number_integer() ? it->get<long long>() : -1;
      };
      std::printf("trained: %lld steps, %lld tokens\n", count("step"), count("tokens"));
      // MoE: the per-expert load of the last step, one line per routed layer.
      auto load = j.find("expert_load");
      if (load != j.end() && load->is_array()) {
        std::printf("expert load (fraction of assignments per expert, last training step):\n");
        size_t layer = 0;
        for (const auto& l : *load) {
          if (!l.is_array() || l.empty()) continue;
          double mx = 0, sum = 0;
          std::string row;
          for (const auto& x : l) {
            const double v = x.is_number() ? x.get<double>() : 0.0;
            mx = std::max(mx, v), sum += v;
            char b[16];
            std::snprintf(b, sizeof b, " %.3f", v);
            if (row.size() < 400) row += b;  // bounded: a crafted file cannot flood the terminal
          }
          std::printf("  layer %zu: max/mean %.2f |%s\n", layer++, sum > 0 ? mx * static_cast<double>(l.size()) / sum : 0.0,
                      row.c_str());
        }
      }
    }
  }
  // Parameters per module: "model.blocks.3.mixer.wq.weight" -> "model.blocks.3", "opt.m.x" -> "opt.m".
  auto group_of = [](const std::string& name) {
    size_t parts = name.rfind("model.blocks.", 0) == 0 ? 3 : 2, pos = 0;
    for (size_t i = 0; i < parts && pos != std::string::npos; ++i) pos = name.find('.', pos + (i ? 1 : 0));
    return pos == std::string::npos ? name : name.substr(0, pos);
  };
  std::map<std::string, std::pair<int64_t, int64_t>> groups;  // name -> (elements, bytes)
  int64_t total = 0, total_bytes = 0;
  for (const auto& [name, t] : f.tensors) {
    std::string g = group_of(name);
    groups[g].first += t.numel();
    groups[g].second += static_cast<int64_t>(t.nbytes());
    total += t.numel();
    total_bytes += static_cast<int64_t>(t.nbytes());
  }
  std::printf("%-40s %14s %12s\n", "module", "elements", "bytes");
  for (const auto& [g, v] : groups) std::printf("%-40s %14lld %12lld\n", g.c_str(), static_cast<long long>(v.first),
                                                static_cast<long long>(v.second));
  std::printf("%-40s %14lld %12lld\n", "total", static_cast<long long>(total), static_cast<long long>(total_bytes));
  if (all) {
    std::printf("\n%-56s %-6s %s\n", "tensor", "dtype", "shape");
    for (const auto& [name, t] : f.tensors) std::printf("%-56s %-6s %s\n", name.c_str(), dtype_name(t.dtype()), shape_str(t.shape()).c_str());
  }
  return 0;
}

int run_presets() {
  std::printf("%-28s %-10s %-6s %10s %10s  %s\n", "preset", "family", "size", "params", "active", "schedule");
  for (const std::string& name : models::preset_names()) {
    models::ModelConfig c = models::resolve_preset(name);
    // Counting without initialising: build at vocab/width as configured only for small sizes.
    std::string params = "-", active = "-";
    if (c.size != "base") {
      std::unique_ptr<models::LanguageModel> m = models::build_model(c, name);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2fM", m->num_parameters() / 1e6);
      params = buf;
      std::snprintf(buf, sizeof buf, "%.2fM", m->active_parameters() / 1e6);
      active = buf;
    }
    std::printf("%-28s %-10s %-6s %10s %10s  %s\n", name.c_str(), c.family.c_str(), c.size.c_str(), params.c_str(),
                active.c_str(), models::describe_schedule(c).c_str());
  }
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  static std::string path;
  static bool all = false;
  CLI::App* s = app.add_subcommand("inspect", "Show a checkpoint's config, parameters per module, dtypes and sizes");
  s->add_option("path", path, "checkpoint or safetensors file")->required();
  s->add_flag("--tensors", all, "List every tensor");
  set_runner(s, [] { return run_inspect(path, all); });
  CLI::App* p = app.add_subcommand("presets", "List the registered model presets");
  set_runner(p, [] { return run_presets(); });
}

}  // namespace sw::tools
