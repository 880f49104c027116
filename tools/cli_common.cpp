#include "tools/cli_common.h"

#include <cstdio>
#include <filesystem>

#include "infer/kv_policy_eval.h"
#include "models/model_limits.h"
#include "train/checkpoint.h"


namespace sw::tools {

std::unique_ptr<io::Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<io::ByteTokenizer>();
  return io::load_tokenizer(spec);
}

EncodedText encode_text(const io::Tokenizer& tok, const std::string& text) {
  EncodedText e;
  e.tokens = tok.encode(text);
  SW_CHECK(!e.tokens.empty(), "data", "the text encodes to no tokens");
  e.bytes_per_token = static_cast<double>(text.size()) / static_cast<double>(e.tokens.size());
  return e;
}

}  // namespace sw::tools

namespace sw::tools {

Loaded load_run(const std::string& checkpoint, const nn::KvPolicyConfig& policy) {
  train::Checkpoint ck = train::read_checkpoint(checkpoint);
  if (!ck.verified)
    std::fprintf(stderr, "note: %s has no checksums (written before they existed); integrity not checked\n",
                 checkpoint.c_str());
  Loaded l;
  std::string dir = std::filesystem::path(checkpoint).parent_path().string();
  l.tok = make_tokenizer((dir.empty() ? "." : dir) + "/" + ck.state.tokenizer);
  // Ids the tokenizer cannot decode must not be sampled (checked before the model is built).
  SW_CHECK(ck.config.vocab_size == l.tok->vocab_size(), "checkpoint", checkpoint, ":config.vocab_size is ",
           ck.config.vocab_size, " but its tokenizer ", ck.state.tokenizer, " has ", l.tok->vocab_size(),
           " ids; expected them equal");
  l.model = models::build_model(policy.active() ? infer::with_kv_policy(ck.config, policy) : ck.config, checkpoint);
  train::load_model_weights(*l.model, ck);
  return l;
}

void add_kv_policy_flags(CLI::App* cmd, nn::KvPolicyConfig& p) {
  cmd->add_option("--kv-policy", p.policy,
                  "KV-cache policy of every attention layer: full | streaming | h2o | tova | snapkv | quest")
      ->capture_default_str();
  cmd->add_option("--kv-budget", p.budget, "KV policy: tokens kept per head (quest: tokens read per decode query)");
  cmd->add_option("--kv-sinks", p.sinks, "streaming: attention-sink tokens")->capture_default_str();
  cmd->add_option("--kv-recent", p.recent, "h2o: recent tokens never evicted (0 = half the budget)")
      ->capture_default_str();
  cmd->add_option("--kv-window", p.window, "snapkv: observation window")->capture_default_str();
  cmd->add_option("--kv-pool", p.pool, "snapkv: max-pool kernel (odd)")->capture_default_str();
  cmd->add_option("--kv-page", p.page, "quest: tokens per page")->capture_default_str();
}

}  // namespace sw::tools
