// `speedwins convert upcycle`: a trained dense checkpoint becomes a mixture of experts whose
// experts are copies of each FFN (sparse upcycling), written as a checkpoint that `eval`,
// `generate` and `train --init-from` read.
#include <cstdio>
#include <filesystem>

#include "tools/cli_common.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/convert.h"

namespace sw::tools {
namespace {

struct ConvertArgs {
  std::string from, out;
  train::UpcycleOptions upcycle;
};

int run_upcycle(const ConvertArgs& a) {
  namespace fs = std::filesystem;
  train::Checkpoint ck = train::read_checkpoint(a.from);
  models::LanguageModel dense(ck.config, a.from);
  train::load_model_weights(dense, ck);
  std::unique_ptr<models::LanguageModel> moe = train::upcycle(dense, a.upcycle, a.from);
  fs::create_directories(a.out);
  train::TrainState st;
  st.train_config = ck.state.train_config;
  if (!ck.state.tokenizer.empty()) {  // the tokenizer travels with the model
    const fs::path src = fs::path(a.from).parent_path() / ck.state.tokenizer;
    SW_CHECK(fs::exists(src), "convert", a.from, ": its tokenizer file ", src.string(), " is missing");
    fs::copy_file(src, fs::path(a.out) / ck.state.tokenizer, fs::copy_options::overwrite_existing);
    st.tokenizer = ck.state.tokenizer;
  }
  const std::string path = a.out + "/checkpoint.safetensors";
  train::save_checkpoint(path, *moe, nullptr, st);
  std::printf("upcycled %s (%.2fM parameters) into %lld experts, top-%lld: %.2fM parameters\ncheckpoint: %s\n",
              a.from.c_str(), dense.num_parameters() / 1e6, static_cast<long long>(a.upcycle.n_experts),
              static_cast<long long>(a.upcycle.top_k), moe->num_parameters() / 1e6, path.c_str());
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
}

}  // namespace sw::tools
