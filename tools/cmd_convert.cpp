// `speedwins convert upcycle`: a trained dense checkpoint becomes a mixture of experts whose
// experts are copies of each FFN (sparse upcycling). `speedwins convert merge`: an MoE checkpoint's
// experts are merged into fewer (train/expert_merge.h). Both write a checkpoint that `eval`,
// `generate` and `train --init-from` read.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "tools/cli_common.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/convert.h"
#include "train/expert_merge.h"

namespace sw::tools {
namespace {

struct ConvertArgs {
  std::string from, out;
  train::UpcycleOptions upcycle;
  int64_t merge_experts = 4;
};

// The converted model as a checkpoint in `out`, with the source's train config and tokenizer.
std::string write_converted(const train::Checkpoint& ck, const std::string& from, models::LanguageModel& model,
                            const std::string& out) {
  namespace fs = std::filesystem;
  fs::create_directories(out);
  train::TrainState st;
  st.train_config = ck.state.train_config;
  if (!ck.state.tokenizer.empty()) {  // the tokenizer travels with the model
    const fs::path src = fs::path(from).parent_path() / ck.state.tokenizer;
    SW_CHECK(fs::exists(src), "convert", from, ": its tokenizer file ", src.string(), " is missing");
    fs::copy_file(src, fs::path(out) / ck.state.tokenizer, fs::copy_options::overwrite_existing);
    st.tokenizer = ck.state.tokenizer;
  }
  const std::string path = out + "/checkpoint.safetensors";
  train::save_checkpoint(path, model, nullptr, st);
  return path;
}

int run_upcycle(const ConvertArgs& a) {
  train::Checkpoint ck = train::read_checkpoint(a.from);
  models::LanguageModel dense(ck.config, a.from);
  train::load_model_weights(dense, ck);
  std::unique_ptr<models::LanguageModel> moe = train::upcycle(dense, a.upcycle, a.from);
  const std::string path = write_converted(ck, a.from, *moe, a.out);
  std::printf("upcycled %s (%.2fM parameters) into %lld experts, top-%lld: %.2fM parameters\ncheckpoint: %s\n",
              a.from.c_str(), dense.num_parameters() / 1e6, static_cast<long long>(a.upcycle.n_experts),
              static_cast<long long>(a.upcycle.top_k), moe->num_parameters() / 1e6, path.c_str());
  return 0;
}

// The per-expert load of the last training step saved in the checkpoint's train state (empty when
// the run saved none): one array of fractions per block position with a routed FFN.
std::vector<std::vector<double>> saved_expert_load(const train::Checkpoint& ck, const std::string& from) {
  std::vector<std::vector<double>> out;
  auto ts = ck.file.metadata.find("train_state");
  if (ts == ck.file.metadata.end()) return out;
  const nlohmann::json j = nlohmann::json::parse(ts->second, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("expert_load")) return out;
  const nlohmann::json& l = j["expert_load"];
  SW_CHECK(l.is_array() && l.size() <= 4096, "convert", from, ": train_state.expert_load must be an array of per-layer arrays");
  for (const auto& layer : l) {
    SW_CHECK(layer.is_array() && layer.size() <= 8192, "convert", from,
             ": train_state.expert_load: each layer must be an array of at most 8192 fractions");
    std::vector<double> v;
    for (const auto& x : layer) {
      SW_CHECK(x.is_number() && std::isfinite(x.get<double>()) && x.get<double>() >= 0, "convert", from,
               ": train_state.expert_load: loads must be finite numbers >= 0");
      v.push_back(x.get<double>());
    }
    out.push_back(std::move(v));
  }
  return out;
}

int run_merge(const ConvertArgs& a) {
  train::Checkpoint ck = train::read_checkpoint(a.from);
  models::LanguageModel moe(ck.config, a.from);
  train::load_model_weights(moe, ck);
  const std::vector<std::vector<double>> loads = saved_expert_load(ck, a.from);
  std::unique_ptr<models::LanguageModel> merged = train::merge_experts(moe, a.merge_experts, loads, a.from);
  const std::string path = write_converted(ck, a.from, *merged, a.out);
  std::printf("merged the experts of %s (%.2fM parameters) into %lld per layer (%s): %.2fM parameters\ncheckpoint: %s\n",
              a.from.c_str(), moe.num_parameters() / 1e6, static_cast<long long>(a.merge_experts),
              loads.empty() ? "uniform weights: the checkpoint has no expert load"
                                           : "weighted by the checkpoint's expert load",
              merged->num_parameters() / 1e6, path.c_str());
  return 0;
}

}  // namespace

void add_convert_command(CLI::App& app) {
  static ConvertArgs a;
  CLI::App* c = app.add_subcommand("convert", "Convert a trained checkpoint into another architecture");
  c->require_subcommand(1);
  CLI::App* u = c->add_subcommand("upcycle", "Sparse upcycling: every SwiGLU FFN becomes an MoE of copies of it");
  u->add_option("--from", a.from, "Dense checkpoint (checkpoint.safetensors of a run)")->required();
  u->add_option("--out", a.out, "Folder for the converted checkpoint and its tokenizer")->required();
  u->add_option("--experts", a.upcycle.n_experts, "Experts per MoE layer (2..1024)")->capture_default_str();
  u->add_option("--top-k", a.upcycle.top_k, "Experts per token")->capture_default_str();
  u->add_option("--score", a.upcycle.score, "Router score: softmax | sigmoid")->capture_default_str();
  u->add_option("--aux-loss", a.upcycle.aux_loss_coef, "Switch balance-loss coefficient")->capture_default_str();
  u->add_option("--seed", a.upcycle.seed, "Router initialisation seed")->capture_default_str();
  set_runner(u, [] { return run_upcycle(a); });
  CLI::App* m = c->add_subcommand("merge", "Expert merging: each MoE FFN's experts merged into fewer (M-SMoE style)");
  m->add_option("--from", a.from, "MoE checkpoint (checkpoint.safetensors of a run)")->required();
  m->add_option("--out", a.out, "Folder for the converted checkpoint and its tokenizer")->required();
  m->add_option("--experts", a.merge_experts, "Experts per MoE layer after merging (fewer than now)")->capture_default_str();
  set_runner(m, [] { return run_merge(a); });
}

}  // namespace sw::tools
