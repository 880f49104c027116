// A decoder language model assembled from a ModelConfig: embedding, n_layers pre-norm blocks
// (x += mixer(norm(x)); x += ffn(norm(x))), a final norm and the LM head (tied to the embedding by
// default). The mixer and FFN of each block come from the registry, so this file never names an
// architecture.
#pragma once

#include <memory>
#include <vector>

#include "models/model_config.h"
#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::models {

class Block : public nn::Module {
 public:
  Block(const ModelConfig& cfg, const nlohmann::json& mixer_cfg, std::mt19937_64& rng, const std::string& where);
  Variable forward(const Variable& x, const nn::MixerContext& ctx);
  nn::Mixer& mixer() { return *mixer_; }
  nn::Ffn& ffn() { return *ffn_; }

 private:
  nn::RMSNorm *norm1_, *norm2_;
  nn::Mixer* mixer_;
  nn::Ffn* ffn_;
};

// Inference state of the whole model: one LayerState per block (KV cache, recurrent state, ...)
// and the number of tokens consumed so far.
struct ModelState {
  int64_t position = 0;
  std::vector<std::unique_ptr<nn::LayerState>> layers;
  int64_t bytes() const;
};

class LanguageModel : public nn::Module {
 public:
  explicit LanguageModel(const ModelConfig& cfg, const std::string& where = "config");

  // ids i32 [B, T] -> final-normed hidden states [B, T, D]. With a state: consumes and updates it.
  Variable hidden(const Tensor& ids, ModelState* state = nullptr);
  // Mean next-token cross-entropy over targets >= 0 (i32 [B, T]), via the fused chunked LM head,
  // plus any auxiliary losses of the FFNs.
  Variable loss(const Tensor& ids, const Tensor& targets);
  // Logits [N, V] of hidden rows [N, D] (inference only; training uses loss()).
  Tensor logits(const Tensor& hidden_rows);
  std::unique_ptr<ModelState> new_state(int64_t batch);

  const ModelConfig& config() const { return cfg_; }
  Variable& head_weight();  // [V, D]: the embedding table when tied
  std::vector<Block*>& blocks() { return blocks_; }
  // Inference state bytes per sequence after `context` tokens, summed over layers.
  int64_t state_bytes(int64_t context);
  // Forward FLOPs per token at a given context: 2 per weight of every GEMM on the path of a token
  // (the embedding lookup is not a GEMM) plus the mixers' own work (attention scores, state updates).
  // include_head: count the LM head (training computes it for every token; a prefill only for the
  // last one).
  double forward_flops_per_token(int64_t context, bool include_head = true);

 private:
  ModelConfig cfg_;
  nn::Embedding* embed_;
  std::vector<Block*> blocks_;
  nn::RMSNorm* final_norm_;
  nn::Linear* head_ = nullptr;
};

}  // namespace sw::models
