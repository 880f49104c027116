#include "train/convert.h"

#include <map>

#include "core/error.h"
#include "models/model_limits.h"

namespace sw::train {

using json = nlohmann::json;

namespace {

// {"type": "swiglu", "hidden": h} -> the MoE entry with n_experts copies of that width.
json moe_of(const json& ffn, const models::ModelConfig& dense, const UpcycleOptions& o) {
  const int64_t hidden = ffn.value("hidden", int64_t{0}) ? ffn.value("hidden", int64_t{0}) : dense.resolved_ffn_hidden();
  return {{"type", "moe"},        {"n_experts", o.n_experts},         {"top_k", o.top_k},
          {"expert_hidden", hidden}, {"score", o.score},              {"renormalize", true},
          {"aux_loss_coef", o.aux_loss_coef}};
}

bool is_swiglu(const json& ffn) { return ffn.is_object() && ffn.value("type", std::string()) == "swiglu"; }

}  // namespace

int rewrite_ffns(models::ModelConfig& c, const std::function<bool(const json&)>& match,
                 const std::function<json(const json&)>& rewrite) {
  int n = 0;
  if (match(c.ffn)) c.ffn = rewrite(c.ffn), ++n;
  if (c.ffns.is_object())
    for (auto it = c.ffns.begin(); it != c.ffns.end(); ++it)
      if (match(it.value())) it.value() = rewrite(it.value()), ++n;
  return n;
}

models::ModelConfig upcycled_config(const models::ModelConfig& dense, const UpcycleOptions& o,
                                    const std::string& where) {
  SW_CHECK(o.n_experts >= 2 && o.n_experts <= 1024, "convert", "--experts must be in 2..1024, got ", o.n_experts);
  SW_CHECK(o.top_k >= 1 && o.top_k <= o.n_experts, "convert", "--top-k must be in 1..", o.n_experts, ", got ", o.top_k);
  SW_CHECK(o.score == "softmax" || o.score == "sigmoid", "convert", "--score must be softmax or sigmoid, got '",
           o.score, "'");
  models::ModelConfig c = dense;
  const int converted = rewrite_ffns(c, is_swiglu, [&](const json& f) { return moe_of(f, dense, o); });
  SW_CHECK(converted > 0, "convert", where, ": the model has no SwiGLU FFN to upcycle");
  c.name = dense.name + "-upcycled";
  c.family = "moe";
  // Validate the result as a config file would be.
  return models::parse_model_config(models::model_config_to_json(c), where + " (upcycled)");
}

std::unique_ptr<models::LanguageModel> upcycle(models::LanguageModel& dense, const UpcycleOptions& o,
                                               const std::string& where) {
  models::ModelConfig cfg = upcycled_config(dense.config(), o, where);
  cfg.seed = o.seed;
  auto moe = models::build_model(cfg, where);
  std::map<std::string, Tensor> weights;
  dense.visit_parameters([&](const std::string& n, nn::Parameter& p) { weights[n] = p.var.data().to(DType::f32); });
  // "<block>.ffn.w_gate" [E, H, D] <- "<block>.ffn.gate.weight" [H, D], and so on; the router and
  // anything else new keeps its initialisation.
  const std::map<std::string, std::string> expert_source = {
      {"ffn.w_gate", "ffn.gate.weight"}, {"ffn.w_up", "ffn.up.weight"}, {"ffn.w_down", "ffn.down.weight"}};
  int64_t copied = 0;
  moe->visit_parameters([&](const std::string& n, nn::Parameter& p) {
    Tensor& dst = p.var.mutable_data();
    if (auto it = weights.find(n); it != weights.end()) {
      SW_CHECK(it->second.shape() == dst.shape(), "convert", where, ": '", n, "' is ", it->second.describe(),
               " in the dense model, ", dst.describe(), " upcycled");
      dst.copy_from(it->second), ++copied;
      return;
    }
    for (const auto& [suffix, source] : expert_source) {
      if (n.size() < suffix.size() || n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
      const std::string from = n.substr(0, n.size() - suffix.size()) + source;
      auto it = weights.find(from);
      SW_CHECK(it != weights.end(), "convert", where, ": no dense '", from, "' for '", n, "'");
      SW_CHECK(dst.ndim() == 3 && it->second.ndim() == 2 && dst.dim(1) == it->second.dim(0) &&
                   dst.dim(2) == it->second.dim(1),
               "convert", where, ": '", from, "' ", it->second.describe(), " does not fit the experts of '", n, "' ",
               dst.describe());
      for (int64_t e = 0; e < dst.dim(0); ++e) dst.select(0, e).copy_from(it->second);
      ++copied;
    }
  });
  SW_CHECK(copied > 0, "convert", where, ": nothing was copied from the dense model");
  return moe;
}

}  // namespace sw::train
