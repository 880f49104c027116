// Sparse mixture-of-experts FFN (survey section 5), an entry of the FFN slot:
//
//   y = sum_{e in S(x)} g_e(x) * Expert_e(x)  +  SharedSwiGLU(x)
//
// Routers (nn/moe/router.h): token-choice top-k over softmax or sigmoid scores with or without
// renormalising the top-k, expert choice, DeepSeek-V3 group-limited. Balancing: the Switch/GShard
// auxiliary loss, the ST-MoE router z-loss, DeepSeek-V3's auxiliary-loss-free selection bias.
// Experts: SwiGLU experts run by the dropless grouped dispatch (ops::moe_swiglu), DeepSeekMoE
// shared experts (one SwiGLU of width n_shared * expert_hidden that every token uses), MoE++
// zero / copy / constant experts, and an optional capacity factor with token dropping.
//
// Routed expert ids: [0, n_experts) are SwiGLU experts, then n_zero_experts zero experts, then
// n_copy_experts copy experts, then n_constant_experts constant experts. The router scores all of
// them; expert_load() and the balancing bias cover all of them.
#pragma once

#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/moe/router.h"

namespace sw::nn {

struct MoeConfig {
  int64_t n_experts = 8;
  int64_t top_k = 2;
  int64_t expert_hidden = 0;  // 0: the model's ffn_hidden
  int64_t n_shared = 0;
  std::string score = "softmax";
  bool renormalize = true;
  bool unit_gates = false;
  std::string router = "token_choice";
  int64_t n_groups = 1;
  int64_t topk_groups = 1;
  double capacity_factor = 0;
  double aux_loss_coef = 0;
  double z_loss_coef = 0;
  double bias_update_rate = 0;
  int64_t n_zero_experts = 0;
  int64_t n_copy_experts = 0;
  int64_t n_constant_experts = 0;

  template <class V>
  void visit(V& v) {
    v("n_experts", n_experts, "routed SwiGLU experts");
    v("top_k", top_k, "experts per token (expert choice: the average, which sets the capacity)");
    v("expert_hidden", expert_hidden, "hidden width of each expert (0 = the model's ffn_hidden)");
    v("n_shared", n_shared, "shared experts every token uses (DeepSeekMoE), run as one SwiGLU of n_shared * expert_hidden");
    v("score", score, "router score: softmax or sigmoid (DeepSeek-V3)");
    v("renormalize", renormalize, "divide the selected top-k gates by their sum (token-choice routers only)");
    v("unit_gates", unit_gates,
      "selected experts are summed with weight 1, the router only selects (MoEfication: the experts partition one "
      "dense FFN, so top_k = n_experts is that FFN exactly; the router gets no gradient from the loss)");
    v("router", router, "token_choice, expert_choice (each expert picks its tokens) or group_limited (DeepSeek-V3)");
    v("n_groups", n_groups, "expert groups of group_limited routing");
    v("topk_groups", topk_groups, "groups each token may use under group_limited routing");
    v("capacity_factor", capacity_factor,
      "0 = dropless; > 0: an expert takes at most ceil(cf * N * k / E) tokens (expert choice: 0 means 1)");
    v("aux_loss_coef", aux_loss_coef, "Switch/GShard balance loss coef * E * sum_e f_e P_e (0 = off)");
    v("z_loss_coef", z_loss_coef, "router z-loss coef * mean(logsumexp(logits)^2) (0 = off)");
    v("bias_update_rate", bias_update_rate,
      "DeepSeek-V3 auxiliary-loss-free balancing: selection bias step gamma per optimizer step (0 = off)");
    v("n_zero_experts", n_zero_experts, "MoE++ zero experts (output 0)");
    v("n_copy_experts", n_copy_experts, "MoE++ copy experts (output x)");
    v("n_constant_experts", n_constant_experts, "MoE++ constant experts (output a learned vector each)");
  }

  int64_t n_routed() const { return n_experts + n_zero_experts + n_copy_experts + n_constant_experts; }
  bool expert_choice() const { return router == "expert_choice"; }
};

// Checks every field against its valid range; `where` names the config file and object.
void validate_moe_config(const MoeConfig& c, const std::string& where);

class MoeFfn : public Ffn {
 public:
  // expert_hidden = 0 resolves to ffn_hidden. Weights ~ N(0, std), output projections (experts'
  // and shared down, constant vectors) ~ N(0, out_std), as SwiGluMlp.
  MoeFfn(int64_t d_model, int64_t ffn_hidden, const MoeConfig& cfg, double std, double out_std, std::mt19937_64& rng);
  Variable forward(const Variable& x) override;  // x [B, T, D] -> [B, T, D]
  Variable aux_loss() override { return aux_; }
  std::vector<double> expert_load() const override { return load_; }
  void end_step() override;

  const MoeConfig& config() const { return cfg_; }
  int64_t expert_hidden() const { return hidden_; }
  const Routing& last_routing() const { return routing_; }  // of the last forward
  // Parameters one token uses: router, top_k experts, the shared experts (and constant vectors).
  int64_t active_parameters() override;
  // All weights but the SwiGLU experts no token chose in the last forward.
  double last_weight_bytes() override;
  double gemm_weights_per_token() override;  // router, top_k experts, shared experts
  Variable* selection_bias() { return bias_; }  // null unless bias_update_rate > 0

 private:
  Routing route(const float* scores, int64_t N) const;

  MoeConfig cfg_;
  int64_t d_model_, hidden_;
  Linear* router_;
  Variable *w_gate_, *w_up_, *w_down_;
  SwiGluMlp* shared_ = nullptr;
  Variable* consts_ = nullptr;
  Variable* bias_ = nullptr;
  Routing routing_;
  std::vector<double> load_;
  std::vector<int64_t> step_counts_;  // selections since the last end_step (training forwards only)
  Variable aux_;
};

}  // namespace sw::nn
