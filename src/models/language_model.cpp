#include "models/language_model.h"

#include <set>

#include "core/timer.h"
#include "models/registry.h"
#include "ops/ops.h"

namespace sw::models {

Block::Block(const ModelConfig& cfg, const LayerSpec& spec, const nn::MixerSite& site, std::mt19937_64& rng,
             const std::string& where) {
  norm1_ = add_module("norm1", std::make_unique<nn::RMSNorm>(cfg.d_model, cfg.norm_eps));
  mixer_type_ = spec.mixer.at("type").get<std::string>();
  const std::string mixer_at = spec.mixer_name.empty() ? where + ".mixer" : where + ".mixers." + spec.mixer_name;
  mixer_ = add_module("mixer", find_mixer(mixer_type_, mixer_at).make(spec.mixer, cfg, site, rng, mixer_at));
  const std::string ffn_at = spec.ffn_name.empty() ? where + ".ffn" : where + ".ffns." + spec.ffn_name;
  std::unique_ptr<nn::Ffn> ffn =
      find_ffn(spec.ffn.at("type").get<std::string>(), ffn_at).make(spec.ffn, cfg, site, rng, ffn_at);
  if (ffn) {
    norm2_ = add_module("norm2", std::make_unique<nn::RMSNorm>(cfg.d_model, cfg.norm_eps));
    ffn_ = add_module("ffn", std::move(ffn));
  }
  if (depth_routed(cfg.mixture_of_depths, site.layer_index))
    router_ = add_module("router", std::make_unique<DepthRouter>(cfg.d_model, cfg.mixture_of_depths, site.layer_index,
                                                                 cfg.init_std, rng));
}

Variable Block::forward(const Variable& x, const nn::MixerContext& ctx) {
  if (router_)
    return router_->forward(x, ctx, [this](const Variable& xs, const nn::MixerContext& c) { return delta(xs, c); });
  Variable h = ops::add(x, mixer_->forward(norm1_->forward(x), ctx));
  return ffn_ ? ops::add(h, ffn_->forward(norm2_->forward(h))) : h;
}

Variable Block::delta(const Variable& x, const nn::MixerContext& ctx) {
  Variable m = mixer_->forward(norm1_->forward(x), ctx);
  return ffn_ ? ops::add(m, ffn_->forward(norm2_->forward(ops::add(x, m)))) : m;
}

int64_t ModelState::bytes() const {
  int64_t b = cross_kv ? cross_kv->bytes() : 0;
  for (const auto& l : layers) b += l->bytes();
  return b;
}

std::map<std::string, int64_t> ModelState::bytes_by_kind() const {
  std::map<std::string, int64_t> out;
  for (const auto& l : layers) l->add_bytes_by_kind(out);
  if (cross_kv) cross_kv->add_bytes_by_kind(out);
  return out;
}

LanguageModel::LanguageModel(const ModelConfig& cfg, const std::string& where) : cfg_(cfg) {
  const std::vector<LayerSpec> schedule = resolve_schedule(cfg, where);
  check_mixture_of_depths(cfg, schedule, where);  // also for configs built in code
  std::mt19937_64 rng(static_cast<uint64_t>(cfg.seed));
  embed_ = add_module("embed", std::make_unique<nn::Embedding>(cfg.vocab_size, cfg.d_model, cfg.init_std, rng));
  if (cfg.meta_tokens > 0)
    meta_tokens_ = &add_param("meta_tokens", nn::init_normal({cfg.meta_tokens, cfg.d_model}, cfg.init_std, rng), false);
  std::map<std::string, Block*> shared;
  for (size_t i = 0; i < schedule.size(); ++i) {
    const LayerSpec& spec = schedule[i];
    const nn::MixerSite site{static_cast<int64_t>(i), cfg.n_layers};
    if (spec.shared) {
      auto it = shared.find(spec.mixer_name);
      if (it == shared.end())
        it = shared.emplace(spec.mixer_name, add_module("shared." + spec.mixer_name,
                                                        std::make_unique<Block>(cfg, spec, site, rng, where)))
                 .first;
      blocks_.push_back(it->second);
    } else {
      blocks_.push_back(
          add_module("blocks." + std::to_string(i), std::make_unique<Block>(cfg, spec, site, rng, where)));
    }
  }
  // YOCO: one key/value producer before the first cross-decoder; every cross-decoder must read the
  // same shape of it.
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (!blocks_[i]->mixer().reads_cross_kv()) continue;
    const auto& c = dynamic_cast<nn::CrossDecoderAttention&>(blocks_[i]->mixer()).config();
    if (!cross_kv_) {
      cross_kv_at_ = i;
      cross_kv_ = add_module("cross_kv", std::make_unique<nn::CrossKvProducer>(cfg.d_model, c, cfg.norm_eps, rng));
    }
    const auto& first = cross_kv_->config();
    SW_CHECK(c.kv_heads() == first.kv_heads() && c.resolved_head_dim(cfg.d_model) == first.resolved_head_dim(cfg.d_model) &&
                 c.rope_base == first.rope_base && c.kv_dtype == first.kv_dtype,
             "config", where, ".layers[", i, "]: every cross-decoder must read the one shared KV: n_kv_heads, head_dim, ",
             "rope_base and kv_dtype must equal those of layer ", cross_kv_at_);
  }
  // A masked-diffusion model predicts each masked token from the whole canvas: a causal mixer would
  // hide the right context it is trained to use (and sampling reads every position each step).
  check_objective(cfg, where);
  if (cfg.masked_diffusion())
    for (size_t i = 0; i < blocks_.size(); ++i)
      SW_CHECK(!blocks_[i]->mixer().causal(), "config", where, ".objective: masked_diffusion needs bidirectional mixers, but layer ",
               i, "'s mixer '", blocks_[i]->mixer_type(), "' is causal (give attention \"causal\": false; ",
               "mixers without a bidirectional form cannot be used)");
  final_norm_ = add_module("final_norm", std::make_unique<nn::RMSNorm>(cfg.d_model, cfg.norm_eps));
  if (!cfg.tie_embeddings)
    head_ = add_module("head", std::make_unique<nn::Linear>(cfg.d_model, cfg.vocab_size, false, cfg.init_std, rng));
}

Variable& LanguageModel::head_weight() { return head_ ? head_->weight() : embed_->table(); }

Variable LanguageModel::hidden(const Tensor& ids, ModelState* state) {
  SW_CHECK(ids.ndim() == 2 && ids.dtype() == DType::i32, "model", "ids must be i32 [B, T], got ", ids.describe());
  const int64_t B = ids.dim(0), T = ids.dim(1), M = cfg_.meta_tokens;
  Variable x = embed_->forward(ids);
  nn::MixerContext ctx;
  if (state) {
    SW_CHECK(state->layers.size() == blocks_.size(), "model", "state has ", state->layers.size(), " layers, model ",
             blocks_.size());
    ctx.position = state->prefix + state->position;
  }
  // Meta tokens lead every sequence: in training each batch, at inference the first call.
  const bool prepend = meta_tokens_ && (!state || (state->position == 0 && state->prefix == 0));
  if (prepend)
    x = ops::concat({ops::add(Variable(Tensor::zeros({B, M, cfg_.d_model})), *meta_tokens_), x}, 1);
  nn::CrossKv kv;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (cross_kv_ && i == cross_kv_at_) {
      kv = cross_kv_->produce(x, ctx.position, state ? state->cross_kv.get() : nullptr);
      ctx.cross_kv = &kv;
    }
    ctx.state = state ? state->layers[i].get() : nullptr;
    const double t0 = block_timer_ ? now_seconds() : 0;
    x = blocks_[i]->forward(x, ctx);
    if (block_timer_) (*block_timer_)[blocks_[i]->mixer_type()] += now_seconds() - t0;
  }
  if (prepend) x = ops::slice(x, 1, M, M + T);
  if (state) {
    if (prepend) state->prefix = M;
    state->position += T;
  }
  return final_norm_->forward(x);
}

Variable LanguageModel::loss(const Tensor& ids, const Tensor& targets) {
  SW_CHECK(targets.shape() == ids.shape() && targets.dtype() == DType::i32, "model", "targets ", targets.describe(),
           " must match ids ", ids.describe());
  Variable h = hidden(ids);
  int64_t n = ids.numel();
  ops::CrossEntropyOptions o;
  o.compute = nn::matmul_dtype();
  return with_aux_losses(
      ops::fused_cross_entropy(ops::reshape(h, {n, cfg_.d_model}), head_weight(), targets.reshape({n}), o));
}

Variable LanguageModel::with_aux_losses(Variable l) {
  for (Block* b : blocks_) {
    Variable aux = b->ffn() ? b->ffn()->aux_loss() : Variable();
    if (aux.defined()) l = ops::add(l, aux);
    Variable route = b->router() ? b->router()->aux_loss() : Variable();
    if (route.defined()) l = ops::add(l, route);
  }
  return l;
}

Tensor LanguageModel::logits(const Tensor& hidden_rows) {
  NoGradGuard g;
  Variable h(hidden_rows.contiguous());
  return ops::linear(h, head_weight(), nullptr, DType::f32).data();
}

void LanguageModel::end_training_step() {
  std::set<nn::Ffn*> done;  // a shared block's FFN steps once
  for (Block* b : blocks_)
    if (b->ffn() && done.insert(b->ffn()).second) b->ffn()->end_step();
}

std::vector<std::vector<double>> LanguageModel::expert_loads() {
  std::vector<std::vector<double>> out;
  for (Block* b : blocks_)
    if (b->ffn() && !b->ffn()->expert_load().empty()) out.push_back(b->ffn()->expert_load());
  return out;
}

std::unique_ptr<ModelState> LanguageModel::new_state(int64_t batch) {
  auto s = std::make_unique<ModelState>();
  for (Block* b : blocks_) s->layers.push_back(b->mixer().new_state(batch));
  if (cross_kv_) s->cross_kv = cross_kv_->new_state(batch);
  return s;
}

int64_t LanguageModel::state_bytes(int64_t context) {
  int64_t total = 0;
  for (const auto& [kind, bytes] : state_bytes_by_kind(context)) total += bytes;
  return total;
}

std::map<std::string, int64_t> LanguageModel::state_bytes_by_kind(int64_t context) {
  const int64_t seen = context + cfg_.meta_tokens;  // meta tokens sit in the caches too
  std::map<std::string, int64_t> out;
  for (Block* b : blocks_) b->mixer().add_state_bytes_by_kind(seen, out);
  if (cross_kv_) out["kv"] += cross_kv_->state_bytes(seen);
  return out;
}

// GEMM weights are counted at every depth a block runs (a shared block does its work each time).
double LanguageModel::forward_flops_per_token(int64_t context, bool include_head) {
  auto matrix_weights = [](nn::Module& m) {
    double w = 0;
    m.visit_parameters([&](const std::string&, nn::Parameter& p) {
      if (p.var.data().ndim() == 2) w += static_cast<double>(p.var.numel());
    });
    return w;
  };
  double gemm_weights = 0, extra = 0;
  const int64_t seen = context + cfg_.meta_tokens;
  for (Block* b : blocks_) {
    const double w = matrix_weights(b->mixer()) + (b->ffn() ? b->ffn()->gemm_weights_per_token() : 0.0);
    if (b->router()) {  // Mixture-of-Depths: a capacity fraction of the tokens, over that fraction of keys
      const double cap = cfg_.mixture_of_depths.capacity;
      gemm_weights += cap * w + matrix_weights(*b->router());
      extra += cap * b->mixer().extra_flops_per_token(depth_capacity_tokens(cap, seen));
    } else {
      gemm_weights += w;
      extra += b->mixer().extra_flops_per_token(seen);
    }
  }
  if (cross_kv_) gemm_weights += matrix_weights(*cross_kv_);
  if (include_head) gemm_weights += static_cast<double>(cfg_.vocab_size * cfg_.d_model);
  return 2.0 * gemm_weights + extra;
}

int64_t LanguageModel::active_parameters() {
  int64_t n = num_parameters();
  std::set<nn::Ffn*> done;
  for (Block* b : blocks_)
    if (b->ffn() && done.insert(b->ffn()).second) n -= b->ffn()->num_parameters() - b->ffn()->active_parameters();
  return n;
}

double LanguageModel::last_step_weight_bytes() {
  double bytes = 0;
  visit_parameters([&](const std::string& name, nn::Parameter& p) {
    double b = static_cast<double>(p.var.data().nbytes());
    if (name.rfind("embed.", 0) == 0 && !cfg_.tie_embeddings) b /= static_cast<double>(cfg_.vocab_size);
    bytes += b;
  });
  auto all_bytes = [](nn::Module& m) {
    double all = 0;
    m.visit_parameters(
        [&](const std::string&, nn::Parameter& p) { all += static_cast<double>(p.var.data().nbytes()); });
    return all;
  };
  std::set<nn::Ffn*> done;
  for (Block* b : blocks_) {
    if (b->router() && b->router()->last_per_row() == 0) {  // skipped: only the router was read (never shared)
      bytes -= all_bytes(*b) - all_bytes(*b->router());
      continue;
    }
    if (b->ffn() && done.insert(b->ffn()).second) bytes -= all_bytes(*b->ffn()) - b->ffn()->last_weight_bytes();
  }
  return bytes;
}

}  // namespace sw::models
