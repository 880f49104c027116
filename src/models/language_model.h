// A decoder language model assembled from a ModelConfig: embedding, n_layers pre-norm blocks
// (x += mixer(norm(x)); x += ffn(norm(x)), the second half absent for FFN "none"), a final norm and
// the LM head (tied to the embedding by default). Each block's mixer and FFN come from the registry
// through the config's schedule (models/schedule.h), so this file never names an architecture. It
// does own the compositions that span blocks: shared blocks (one module at several depths, a state
// per depth), Hymba's meta tokens (prepended before the first block, dropped after the last) and
// YOCO's one shared KV (produced before the first cross-decoder block, read by all of them).
// A block may be depth-routed (Mixture-of-Depths, models/mixture_of_depths.h): only some tokens take
// it, through its residual delta.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "models/mixture_of_depths.h"
#include "models/model_config.h"
#include "models/schedule.h"
#include "nn/hybrid/cross_decoder.h"
#include "nn/layers.h"
#include "nn/mixer.h"

namespace sw::models {

class Block : public nn::Module {
 public:
  Block(const ModelConfig& cfg, const LayerSpec& spec, const nn::MixerSite& site, std::mt19937_64& rng,
        const std::string& where);
  // x + delta(x); a depth-routed block applies the delta to its routed tokens only.
  Variable forward(const Variable& x, const nn::MixerContext& ctx);
  // The residual delta block(x) - x of the whole block on every token of x: m = mixer(norm1(x)),
  // then m + ffn(norm2(x + m)) (m alone for FFN "none").
  Variable delta(const Variable& x, const nn::MixerContext& ctx);
  nn::Mixer& mixer() { return *mixer_; }
  nn::Ffn* ffn() { return ffn_; }  // null for FFN "none"
  DepthRouter* router() { return router_; }  // null unless the block is depth-routed
  const std::string& mixer_type() const { return mixer_type_; }

 private:
  nn::RMSNorm *norm1_, *norm2_ = nullptr;
  nn::Mixer* mixer_;
  nn::Ffn* ffn_ = nullptr;
  DepthRouter* router_ = nullptr;
  std::string mixer_type_;
};

// Inference state of the whole model: one LayerState per block position (KV cache, recurrent
// state, ...; a shared block has one per depth), the model-level YOCO cache, and the number of
// tokens consumed so far.
struct ModelState {
  int64_t position = 0;  // tokens of the sequence consumed
  int64_t prefix = 0;    // meta tokens consumed before them (Hymba)
  std::vector<std::unique_ptr<nn::LayerState>> layers;
  std::unique_ptr<nn::LayerState> cross_kv;  // YOCO's one shared KV cache, or null
  int64_t bytes() const;
  std::map<std::string, int64_t> bytes_by_kind() const;  // "kv", "recurrent", ... -> bytes held
};

class LanguageModel : public nn::Module {
 public:
  explicit LanguageModel(const ModelConfig& cfg, const std::string& where = "config");

  // ids i32 [B, T] -> final-normed hidden states [B, T, D]. With a state: consumes and updates it.
  Variable hidden(const Tensor& ids, ModelState* state = nullptr);
  // Mean next-token cross-entropy over targets >= 0 (i32 [B, T]), via the fused chunked LM head,
  // plus any auxiliary losses of the FFNs and of the depth routers.
  Variable loss(const Tensor& ids, const Tensor& targets);
  // l plus the auxiliary losses of the FFNs (MoE balancing) and depth routers of the last forward:
  // what loss() adds, for objectives that compute their own cross-entropy (masked diffusion).
  Variable with_aux_losses(Variable l);
  // Logits [N, V] of hidden rows [N, D] (inference only; training uses loss()).
  Tensor logits(const Tensor& hidden_rows);
  std::unique_ptr<ModelState> new_state(int64_t batch);

  const ModelConfig& config() const { return cfg_; }
  Variable& head_weight();  // [V, D]: the embedding table when tied
  std::vector<Block*>& blocks() { return blocks_; }  // one per depth; a shared block appears at each of its
  // Inference state bytes per sequence after `context` tokens, summed over layers, and by kind.
  int64_t state_bytes(int64_t context);
  std::map<std::string, int64_t> state_bytes_by_kind(int64_t context);
  // After every optimizer step: each distinct FFN's end_step() (MoE load balancing by bias).
  void end_training_step();
  // Per block position with a routed FFN: the fraction of assignments per expert in the last
  // forward (empty when no block routes).
  std::vector<std::vector<double>> expert_loads();
  // While set, hidden() adds each block's wall time to (*acc)[its mixer type] (bench: decode cost per
  // layer kind). Null turns it off.
  void set_block_timer(std::map<std::string, double>* acc) { block_timer_ = acc; }
  // Forward FLOPs per token at a given context: 2 per weight of every GEMM on the path of a token
  // (the embedding lookup is not a GEMM) plus the mixers' own work (attention scores, state updates).
  // include_head: count the LM head (training computes it for every token; a prefill only for the
  // last one). A depth-routed block counts capacity times its work (over capacity * context keys)
  // plus its router: its training cost per token (at inference the fraction taken is data-dependent).
  double forward_flops_per_token(int64_t context, bool include_head = true);
  // Parameters one token uses (routed FFNs count their top-k experts; a shared block counts once).
  // A depth-routed block counts whole, with its router: a token that takes it uses all of it.
  int64_t active_parameters();
  // Bytes of weights a decode step reads: every weight, but one embedding row when the head is
  // untied, of routed FFNs only the experts the last forward chose, and of a depth-routed block that
  // no token took in the last forward only its router.
  double last_step_weight_bytes();

 private:
  ModelConfig cfg_;
  nn::Embedding* embed_;
  Variable* meta_tokens_ = nullptr;  // [meta_tokens, D]
  std::vector<Block*> blocks_;
  nn::CrossKvProducer* cross_kv_ = nullptr;
  size_t cross_kv_at_ = 0;  // the block before which the shared KV is produced
  nn::RMSNorm* final_norm_;
  nn::Linear* head_ = nullptr;
  std::map<std::string, double>* block_timer_ = nullptr;
};

}  // namespace sw::models
