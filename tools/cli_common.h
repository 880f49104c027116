// Shared by the CLI subcommands: finding the text corpus and the tokenizer, turning text into a
// token dataset.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "io/tokenizer.h"
#include "models/language_model.h"
#include "nn/attention/kv_policy.h"
#include "train/data.h"
#include "train/text_source.h"

namespace sw::tools {


// tokenizer: "byte", or a path to a tokenizer file written by `speedwins tokenizer train`.
std::unique_ptr<io::Tokenizer> make_tokenizer(const std::string& spec);

struct EncodedText {
  std::vector<int32_t> tokens;
  double bytes_per_token = 1.0;
};
EncodedText encode_text(const io::Tokenizer& tok, const std::string& text);

// A trained run: its model (weights loaded) and its tokenizer (from the checkpoint's folder). With
// an active policy every attention layer of the model gets it (infer/kv_policy_eval.h).
struct Loaded {
  std::unique_ptr<models::LanguageModel> model;
  std::unique_ptr<io::Tokenizer> tok;
};
Loaded load_run(const std::string& checkpoint, const nn::KvPolicyConfig& policy = {});

// --kv-policy, --kv-budget, --kv-sinks, --kv-recent, --kv-window, --kv-pool, --kv-page: a
// training-free KV-cache policy for generate, eval and bench (nn/attention/kv_policy.h).
void add_kv_policy_flags(CLI::App* cmd, nn::KvPolicyConfig& policy);

}  // namespace sw::tools
