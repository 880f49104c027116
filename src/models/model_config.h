// ModelConfig: everything needed to build a language model, read from one JSON file (a preset in
// configs/ or the config.json beside a checkpoint). Mixers and FFNs are nested objects whose "type"
// picks an entry of the registry (models/registry.cpp) and whose other fields belong to that entry's
// own config struct. Which block gets which mixer and FFN is the schedule (models/schedule.h): one
// "mixer" for every block, or named "mixers" (and "ffns") laid out by "layers".
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sw::models {

// Mixture-of-Depths (Raposo et al. 2024; models/mixture_of_depths.h): every `every`-th block is
// depth-routed: per sequence only ceil(capacity * T) tokens (training: the top-k by router logit;
// inference: those with a positive logit) go through it, the others pass it unchanged.
struct MixtureOfDepthsConfig {
  double capacity = 0.125;  // fraction of a sequence's tokens a routed block takes, (0, 1]
  int64_t every = 0;        // route blocks every-1, 2*every-1, ... (0 = off; 2 = every other block)
  double aux_loss_coef = 0.01;
  std::string scale = "sigmoid";  // what multiplies the block's delta: sigmoid(r) or the raw logit r

  template <class V>
  void visit(V& v) {
    v("capacity", capacity, "fraction of each sequence's tokens a routed block takes in training, in (0, 1]");
    v("every", every, "route every n-th block (1 = all, 2 = every other one; 0 = off)");
    v("aux_loss_coef", aux_loss_coef,
      "weight of the BCE loss teaching sigmoid(router logit) to predict top-k membership (causal inference)");
    v("scale", scale, "factor on a routed token's block delta: sigmoid (of the router logit) or logit (the paper's r)");
  }
  bool enabled() const { return every > 0; }
};

struct ModelConfig {
  std::string name = "model";
  std::string family = "";  // survey family, e.g. "attention", "linear", "ssm"
  std::string size = "";    // tiny | small | base: the arena compares presets of one size
  int64_t vocab_size = 260;
  int64_t d_model = 256;
  int64_t n_layers = 4;
  int64_t ffn_hidden = 0;  // 0: 8/3 * d_model rounded up to a multiple of 32 (Llama)
  bool tie_embeddings = true;
  double norm_eps = 1e-6;
  double init_std = 0.02;
  int64_t seed = 1;  // initialisation seed
  int64_t meta_tokens = 0;  // Hymba: learned tokens prepended to every sequence
  nlohmann::json mixer = {{"type", "attention"}};  // single-mixer form (when "mixers" is absent)
  nlohmann::json ffn = {{"type", "swiglu"}};       // every block's FFN unless the schedule names one
  nlohmann::json mixers;  // schedule form: {name: mixer config}
  nlohmann::json ffns;    // schedule form: {name: FFN config}
  nlohmann::json layers;  // schedule form: a pattern string over mixer names, or [{mixer, ffn}, ...]
  std::vector<std::string> shared;  // mixer names whose blocks share one parameter set (Zamba)
  MixtureOfDepthsConfig mixture_of_depths;  // "mixture_of_depths": {...}; off unless every > 0
  // What the model is trained to predict (train/trainer.h, train/diffusion_loss.h):
  //   autoregressive:   the next token at every position (a causal model).
  //   masked_diffusion: LLaDA (Nie et al. 2025): the clean token at every position replaced by the
  //                     [MASK] id; every mixer must be bidirectional (Mixer::causal() false).
  std::string objective = "autoregressive";
  // masked_diffusion: the [MASK] id fed at masked positions. -1 = vocab_size - 1, which is the
  // byte tokenizer's mask (259 of 260); a tokenizer whose mask sits elsewhere names it here. It must
  // be an id that no data token takes (train refuses data holding it).
  int64_t mask_id = -1;

  template <class V>
  void visit(V& v) {
    v("name", name, "preset name");
    v("family", family, "survey family of the mixer");
    v("size", size, "size class: tiny, small, base");
    v("vocab_size", vocab_size, "vocabulary size (byte tokenizer: 260)");
    v("d_model", d_model, "residual width");
    v("n_layers", n_layers, "number of blocks");
    v("ffn_hidden", ffn_hidden, "FFN hidden width (0 = 8/3 d_model rounded to 32)");
    v("tie_embeddings", tie_embeddings, "share the embedding and the LM head");
    v("norm_eps", norm_eps, "RMSNorm epsilon");
    v("init_std", init_std, "std of weight initialisation");
    v("seed", seed, "initialisation seed");
    v("meta_tokens", meta_tokens, "learned meta tokens prepended to every sequence (Hymba; 0 = none)");
    v("objective", objective, "autoregressive (next token) or masked_diffusion (LLaDA; bidirectional mixers)");
    v("mask_id", mask_id, "masked_diffusion: the [MASK] id (-1 = vocab_size - 1, the byte tokenizer's mask)");
  }
  bool masked_diffusion() const { return objective == "masked_diffusion"; }
  int32_t resolved_mask_id() const { return static_cast<int32_t>(mask_id >= 0 ? mask_id : vocab_size - 1); }

  int64_t resolved_ffn_hidden() const { return ffn_hidden ? ffn_hidden : (8 * d_model / 3 + 31) / 32 * 32; }
  bool has_schedule() const { return !mixers.is_null(); }
};

// Parses and validates (sizes positive, mixer/ffn types registered). `where` names the source file.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& where);
ModelConfig load_model_config(const std::string& path);
// objective is known and mask_id lies in [-1, vocab_size); errors name `where`.objective / .mask_id.
// (That a masked_diffusion model's mixers are all bidirectional is checked when it is built.)
void check_objective(const ModelConfig& c, const std::string& where);
nlohmann::json model_config_to_json(const ModelConfig& c);

}  // namespace sw::models
