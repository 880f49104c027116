// `speedwins convert upcycle`: a trained dense checkpoint becomes a mixture of experts whose
// experts are copies of each FFN (sparse upcycling). `speedwins convert merge`: an MoE checkpoint's
// experts are merged into fewer (train/expert_merge.h). Both write a checkpoint that `eval`,
// `generate` and `train --init-from` read.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/bounded_json.h"
#include "models/model_limits.h"
#include "tools/cli_common.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/convert.h"
#include "train/expert_merge.h"
#include "train/moefication.h"
#include "train/trainer.h"

namespace sw::tools {
namespace {

struct ConvertArgs {
  std::string from, out;
  train::UpcycleOptions upcycle;
  int64_t merge_experts = 4;
  train::MoeficationOptions moefy;
  std::string data = "brown";
  int64_t calibration_tokens = 8192, seq_len = 256, eval_batches = 8;
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
  std::unique_ptr<models::LanguageModel> dense = models::build_model(ck.config, a.from);
  train::load_model_weights(*dense, ck);
  std::unique_ptr<models::LanguageModel> moe = train::upcycle(*dense, a.upcycle, a.from);
  const std::string path = write_converted(ck, a.from, *moe, a.out);
  std::printf("upcycled %s (%.2fM parameters) into %lld experts, top-%lld: %.2fM parameters\ncheckpoint: %s\n",
              a.from.c_str(), dense->num_parameters() / 1e6, static_cast<long long>(a.upcycle.n_experts),
              static_cast<long long>(a.upcycle.top_k), moe->num_parameters() / 1e6, path.c_str());
  return 0;
}

// The per-expert load of the last training step saved in the checkpoint's train state (empty when
// the run saved none): one array of fractions per block position with a routed FFN.
std::vector<std::vector<double>> saved_expert_load(const train::Checkpoint& ck, const std::string& from) {
  std::vector<std::vector<double>> out;
  auto ts = ck.file.metadata.find("train_state");
  if (ts == ck.file.metadata.end()) return out;
  const nlohmann::json j = parse_json_bounded(ts->second, from + ": metadata train_state");
  if (!j.is_object() || !j.contains("expert_load")) return out;
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
  std::unique_ptr<models::LanguageModel> moe = models::build_model(ck.config, a.from);
  train::load_model_weights(*moe, ck);
  const std::vector<std::vector<double>> loads = saved_expert_load(ck, a.from);
  std::unique_ptr<models::LanguageModel> merged = train::merge_experts(*moe, a.merge_experts, loads, a.from);
  const std::string path = write_converted(ck, a.from, *merged, a.out);
  std::printf("merged the experts of %s (%.2fM parameters) into %lld per layer (%s): %.2fM parameters\ncheckpoint: %s\n",
              a.from.c_str(), moe->num_parameters() / 1e6, static_cast<long long>(a.merge_experts),
              loads.empty() ? "uniform weights: the checkpoint has no expert load"
                                           : "weighted by the checkpoint's expert load",
              merged->num_parameters() / 1e6, path.c_str());
  return 0;
}

void validate_moefy(const ConvertArgs& a) {
  SW_CHECK(a.calibration_tokens >= 256 && a.calibration_tokens <= (int64_t{1} << 20), "convert",
           "--calibration-tokens ", a.calibration_tokens, ": expected an integer in [256, 1048576]");
  SW_CHECK(a.seq_len >= 8 && a.seq_len <= 8192, "convert", "--seq-len ", a.seq_len, ": expected an integer in [8, 8192]");
  SW_CHECK(a.eval_batches >= 0 && a.eval_batches <= 4096, "convert", "--eval-batches ", a.eval_batches,
           ": expected an integer in [0, 4096]");
  SW_CHECK(a.moefy.iterations >= 1 && a.moefy.iterations <= 1000, "convert", "--iterations ", a.moefy.iterations,
           ": expected an integer in [1, 1000]");
}

int run_moefy(const ConvertArgs& a) {
  train::Checkpoint ck = train::read_checkpoint(a.from);
  std::unique_ptr<models::LanguageModel> dense = models::build_model(ck.config, a.from);
  train::load_model_weights(*dense, ck);
  const std::string dir = std::filesystem::path(a.from).parent_path().string();
  std::unique_ptr<io::Tokenizer> tok =
      make_tokenizer(ck.state.tokenizer.empty() ? "byte" : (dir.empty() ? "." : dir) + "/" + ck.state.tokenizer);
  SW_CHECK(tok->vocab_size() == ck.config.vocab_size, "convert", a.from, ": config.vocab_size is ", ck.config.vocab_size,
           " but its tokenizer has ", tok->vocab_size(), " ids; expected them equal");
  train::TextSource text = train::load_text_source(a.data);
  EncodedText enc = encode_text(*tok, text.text);
  train::TokenDataset data(std::move(enc.tokens), 0.05, tok->vocab_size());
  // Calibration windows from the training split, drawn as training draws them.
  const int64_t rows = std::max<int64_t>(1, a.calibration_tokens / a.seq_len);
  SW_CHECK(static_cast<int64_t>(data.train().size()) > a.seq_len + 1, "convert", a.data, ": ", data.train().size(),
           " training tokens, fewer than --seq-len ", a.seq_len, " + 2");
  train::BatchSampler sampler(data, rows, a.seq_len, a.moefy.seed);
  const Tensor ids = sampler.next().inputs;
  std::fprintf(stderr, "calibrating on %lld tokens of %s ...\n", static_cast<long long>(ids.numel()), text.name.c_str());
  std::vector<train::MoeficationLayer> report;
  std::unique_ptr<models::LanguageModel> moe = train::moefy(*dense, ids, a.moefy, a.from, &report);
  for (const train::MoeficationLayer& l : report)
    std::printf("  %-22s top-%lld of %lld experts keep %5.1f%% of the activation mass (best possible %5.1f%%)\n",
                l.name.c_str(), static_cast<long long>(a.moefy.top_k), static_cast<long long>(a.moefy.n_experts),
                100 * l.router_mass, 100 * l.oracle_mass);
  if (a.eval_batches > 0) {
    const train::EvalResult d = train::evaluate(*dense, data, 4, a.seq_len, a.eval_batches, enc.bytes_per_token);
    const train::EvalResult m = train::evaluate(*moe, data, 4, a.seq_len, a.eval_batches, enc.bytes_per_token);
    std::printf("validation loss on %s (%lld tokens): dense %.4f, MoEfied %.4f (%+.2f%%)\n", text.name.c_str(),
                static_cast<long long>(d.tokens), d.loss, m.loss, 100 * (m.loss - d.loss) / d.loss);
  }
  const std::string path = write_converted(ck, a.from, *moe, a.out);
  std::printf("MoEfied %s: every SwiGLU FFN split into %lld experts (top-%lld): %.2fM parameters, %.2fM active\n"
              "checkpoint: %s\n",
              a.from.c_str(), static_cast<long long>(a.moefy.n_experts), static_cast<long long>(a.moefy.top_k),
              moe->num_parameters() / 1e6, moe->active_parameters() / 1e6, path.c_str());
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
  CLI::App* f = c->add_subcommand(
      "moefy", "MoEfication: each SwiGLU FFN's neurons split into experts by co-activation, with a fitted router");
  f->add_option("--from", a.from, "Dense checkpoint (checkpoint.safetensors of a run)")->required();
  f->add_option("--out", a.out, "Folder for the converted checkpoint and its tokenizer")->required();
  f->add_option("--experts", a.moefy.n_experts, "Experts per FFN (must divide its hidden width)")->capture_default_str();
  f->add_option("--top-k", a.moefy.top_k, "Experts per token (= --experts: exactly the dense model)")
      ->capture_default_str();
  f->add_option("--data", a.data, "Calibration text: brown | synthetic | a text file or folder")->capture_default_str();
  f->add_option("--calibration-tokens", a.calibration_tokens, "Tokens whose activations are clustered")
      ->capture_default_str();
  f->add_option("--seq-len", a.seq_len, "Tokens per calibration window")->capture_default_str();
  f->add_option("--iterations", a.moefy.iterations, "Balanced k-means rounds")->capture_default_str();
  f->add_option("--eval-batches", a.eval_batches, "Validation batches to compare dense and MoEfied loss (0 = skip)")
      ->capture_default_str();
  f->add_option("--seed", a.moefy.seed, "Calibration windows and k-means initialisation")->capture_default_str();
  set_runner(f, [] { return run_moefy(a); });
  set_validator(f, [] { validate_moefy(a); });
}

}  // namespace sw::tools
