#include "models/language_model.h"

#include "models/registry.h"
#include "ops/ops.h"

namespace sw::models {

Block::Block(const ModelConfig& cfg, const nlohmann::json& mixer_cfg, std::mt19937_64& rng, const std::string& where) {
  norm1_ = add_module("norm1", std::make_unique<nn::RMSNorm>(cfg.d_model, cfg.norm_eps));
  std::string type = mixer_cfg.at("type").get<std::string>();
  mixer_ = add_module("mixer", find_mixer(type, where + ".mixer").make(mixer_cfg, cfg, nn::MixerSite{0, cfg.n_layers}, rng, where + ".mixer"));
  norm2_ = add_module("norm2", std::make_unique<nn::RMSNorm>(cfg.d_model, cfg.norm_eps));
  std::string ffn_type = cfg.ffn.at("type").get<std::string>();
  ffn_ = add_module("ffn", find_ffn(ffn_type, where + ".ffn").make(cfg.ffn, cfg, rng, where + ".ffn"));
}

Variable Block::forward(const Variable& x, const nn::MixerContext& ctx) {
  Variable h = ops::add(x, mixer_->forward(norm1_->forward(x), ctx));
  return ops::add(h, ffn_->forward(norm2_->forward(h)));
}

int64_t ModelState::bytes() const {
  int64_t b = 0;
  for (const auto& l : layers) b += l->bytes();
  return b;
}

LanguageModel::LanguageModel(const ModelConfig& cfg, const std::string& where) : cfg_(cfg) {
  std::mt19937_64 rng(static_cast<uint64_t>(cfg.seed));
  embed_ = add_module("embed", std::make_unique<nn::Embedding>(cfg.vocab_size, cfg.d_model, cfg.init_std, rng));
  for (int64_t i = 0; i < cfg.n_layers; ++i)
    blocks_.push_back(add_module("blocks." + std::to_string(i), std::make_unique<Block>(cfg, cfg.mixer, rng, where)));
  final_norm_ = add_module("final_norm", std::make_unique<nn::RMSNorm>(cfg.d_model, cfg.norm_eps));
  if (!cfg.tie_embeddings)
    head_ = add_module("head", std::make_unique<nn::Linear>(cfg.d_model, cfg.vocab_size, false, cfg.init_std, rng));
}

Variable& LanguageModel::head_weight() { return head_ ? head_->weight() : embed_->table(); }

Variable LanguageModel::hidden(const Tensor& ids, ModelState* state) {
  SW_CHECK(ids.ndim() == 2 && ids.dtype() == DType::i32, "model", "ids must be i32 [B, T], got ", ids.describe());
  Variable x = embed_->forward(ids);
  nn::MixerContext ctx;
  if (state) {
    SW_CHECK(state->layers.size() == blocks_.size(), "model", "state has ", state->layers.size(), " layers, model ",
             blocks_.size());
    ctx.position = state->position;
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    ctx.state = state ? state->layers[i].get() : nullptr;
    x = blocks_[i]->forward(x, ctx);
  }
  if (state) state->position += ids.dim(1);
  return final_norm_->forward(x);
}

Variable LanguageModel::loss(const Tensor& ids, const Tensor& targets) {
  SW_CHECK(targets.shape() == ids.shape() && targets.dtype() == DType::i32, "model", "targets ", targets.describe(),
           " must match ids ", ids.describe());
  Variable h = hidden(ids);
  int64_t n = ids.numel();
  ops::CrossEntropyOptions o;
  o.compute = nn::matmul_dtype();
  Variable l = ops::fused_cross_entropy(ops::reshape(h, {n, cfg_.d_model}), head_weight(), targets.reshape({n}), o);
  for (Block* b : blocks_) {
    Variable aux = b->ffn().aux_loss();
    if (aux.defined()) l = ops::add(l, aux);
  }
  return l;
}

Tensor LanguageModel::logits(const Tensor& hidden_rows) {
  NoGradGuard g;
  Variable h(hidden_rows.contiguous());
  return ops::linear(h, head_weight(), nullptr, DType::f32).data();
}

std::unique_ptr<ModelState> LanguageModel::new_state(int64_t batch) {
  auto s = std::make_unique<ModelState>();
  for (Block* b : blocks_) s->layers.push_back(b->mixer().new_state(batch));
  return s;
}

int64_t LanguageModel::state_bytes(int64_t context) {
  int64_t total = 0;
  for (Block* b : blocks_) total += b->mixer().state_bytes(context);
  return total;
}

double LanguageModel::forward_flops_per_token(int64_t context, bool include_head) {
  double gemm_weights = 0;
  visit_parameters([&](const std::string& name, nn::Parameter& p) {
    bool is_head = name.rfind("head.", 0) == 0;
    if (p.var.data().ndim() == 2 && name.rfind("embed.", 0) != 0 && (include_head || !is_head))
      gemm_weights += static_cast<double>(p.var.numel());
  });
  if (cfg_.tie_embeddings && include_head) gemm_weights += static_cast<double>(cfg_.vocab_size * cfg_.d_model);
  double extra = 0;
  for (Block* b : blocks_) extra += b->mixer().extra_flops_per_token(context);
  return 2.0 * gemm_weights + extra;
}

}  // namespace sw::models
