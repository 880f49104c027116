#include "nn/moe/moe.h"

#include <cmath>

#include "ops/moe_ops.h"
#include "ops/ops.h"

namespace sw::nn {
namespace {

void check_range(bool ok, const std::string& where, const char* field, const char* range, double got) {
  SW_CHECK(ok, "config", where, ".", field, ": expected ", range, ", got ", got);
}

bool finite_in(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

void validate_moe_config(const MoeConfig& c, const std::string& where) {
  check_range(c.n_experts >= 1 && c.n_experts <= 4096, where, "n_experts", "1..4096", c.n_experts);
  for (auto [name, v] : {std::pair<const char*, int64_t>{"n_zero_experts", c.n_zero_experts},
                         {"n_copy_experts", c.n_copy_experts}, {"n_constant_experts", c.n_constant_experts}})
    check_range(v >= 0 && v <= 256, where, name, "0..256", v);
  const int64_t R = c.n_routed();
  SW_CHECK(c.top_k >= 1 && c.top_k <= R, "config", where, ".top_k: expected 1..", R,
           " (n_experts plus null experts), got ", c.top_k);
  check_range(c.expert_hidden >= 0 && c.expert_hidden <= (int64_t{1} << 20), where, "expert_hidden",
              "0..2^20 (0 = ffn_hidden)", c.expert_hidden);
  check_range(c.n_shared >= 0 && c.n_shared <= 64, where, "n_shared", "0..64", c.n_shared);
  SW_CHECK(c.score == "softmax" || c.score == "sigmoid", "config", where, ".score: expected softmax or sigmoid, got '",
           c.score, "'");
  SW_CHECK(c.router == "token_choice" || c.router == "expert_choice" || c.router == "group_limited", "config", where,
           ".router: expected token_choice, expert_choice or group_limited, got '", c.router, "'");
  if (c.router == "group_limited") {
    SW_CHECK(c.n_groups >= 1 && c.n_groups <= R && R % c.n_groups == 0, "config", where,
             ".n_groups: expected a divisor of the ", R, " routed experts, got ", c.n_groups);
    SW_CHECK(c.topk_groups >= 1 && c.topk_groups <= c.n_groups, "config", where, ".topk_groups: expected 1..",
             c.n_groups, " (n_groups), got ", c.topk_groups);
    SW_CHECK(c.top_k <= c.topk_groups * (R / c.n_groups), "config", where, ".top_k: expected at most topk_groups * ",
             R / c.n_groups, " experts per group = ", c.topk_groups * (R / c.n_groups), ", got ", c.top_k);
  } else {
    SW_CHECK(c.n_groups == 1 && c.topk_groups == 1, "config", where,
             ".n_groups/topk_groups: only with router group_limited (expected 1, got ", c.n_groups, "/",
             c.topk_groups, ")");
  }
  SW_CHECK(!(c.unit_gates && c.n_routed() > c.n_experts), "config", where,
           ".unit_gates: zero/copy/constant experts need score gates (expected no null experts with unit_gates)");
  check_range(finite_in(c.capacity_factor, 0, 64), where, "capacity_factor", "0..64 (0 = dropless)", c.capacity_factor);
  check_range(finite_in(c.aux_loss_coef, 0, 100), where, "aux_loss_coef", "0..100", c.aux_loss_coef);
  check_range(finite_in(c.z_loss_coef, 0, 100), where, "z_loss_coef", "0..100", c.z_loss_coef);
  check_range(finite_in(c.bias_update_rate, 0, 1), where, "bias_update_rate", "0..1", c.bias_update_rate);
  SW_CHECK(!(c.bias_update_rate > 0 && c.expert_choice()), "config", where,
           ".bias_update_rate: expert_choice routing is balanced by construction; the bias needs a token-choice router");
}

MoeFfn::MoeFfn(int64_t d_model, int64_t ffn_hidden, const MoeConfig& cfg, double std, double out_std,
               std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model), hidden_(cfg.expert_hidden ? cfg.expert_hidden : ffn_hidden) {
  validate_moe_config(cfg_, "moe");
  SW_CHECK(hidden_ >= 1, "config", "moe.expert_hidden: expected >= 1, got ", hidden_);
  const int64_t E = cfg_.n_experts, H = hidden_, D = d_model;
  router_ = add_module("router", std::make_unique<Linear>(D, cfg_.n_routed(), false, std, rng));
  w_gate_ = &add_param("w_gate", init_normal({E, H, D}, std, rng));
  w_up_ = &add_param("w_up", init_normal({E, H, D}, std, rng));
  w_down_ = &add_param("w_down", init_normal({E, D, H}, out_std, rng));
  for (const char* w : {"w_gate", "w_up", "w_down"}) mark_gemm_weight(w);  // bf16 at inference like any GEMM weight
  if (cfg_.n_shared > 0)
    shared_ = add_module("shared", std::make_unique<SwiGluMlp>(D, cfg_.n_shared * H, std, out_std, rng));
  if (cfg_.n_constant_experts > 0)
    consts_ = &add_param("const_vectors", init_normal({cfg_.n_constant_experts, D}, out_std, rng), false);
  if (cfg_.bias_update_rate > 0) {
    // Selection-only: never differentiated (the optimizer skips it), but saved in checkpoints.
    bias_ = &add_param("selection_bias", Tensor::zeros({cfg_.n_routed()}), false);
    bias_->set_requires_grad(false);
  }
  load_.assign(cfg_.n_routed(), 0.0);
  step_counts_.assign(cfg_.n_routed(), 0);
}

double MoeFfn::last_weight_bytes() {
  double bytes = Ffn::last_weight_bytes();
  const double per_expert =
      static_cast<double>(w_gate_->data().nbytes() + w_up_->data().nbytes() + w_down_->data().nbytes()) /
      static_cast<double>(cfg_.n_experts);
  std::vector<char> read(cfg_.n_experts, 0);
  for (int32_t e : routing_.dispatched)
    if (e >= 0 && e < cfg_.n_experts) read[e] = 1;
  for (char r : read)
    if (!r) bytes -= per_expert;
  return bytes;
}

double MoeFfn::gemm_weights_per_token() {
  return static_cast<double>(active_parameters() - cfg_.n_constant_experts * d_model_);
}

int64_t MoeFfn::active_parameters() {
  const int64_t D = d_model_, R = cfg_.n_routed();
  int64_t n = R * D + cfg_.top_k * 3 * D * hidden_ + cfg_.n_shared * 3 * D * hidden_;
  return n + cfg_.n_constant_experts * D;
}

Routing MoeFfn::route(const float* scores, int64_t N) const {
  const int64_t R = cfg_.n_routed();
  if (cfg_.expert_choice()) {
    const double cf = cfg_.capacity_factor > 0 ? cfg_.capacity_factor : 1.0;
    return route_expert_choice(scores, N, R, expert_capacity(cf, N, cfg_.top_k, R));
  }
  const float* b = bias_ ? bias_->data().data<float>() : nullptr;
  const bool groups = cfg_.router == "group_limited";
  Routing r = route_top_k(scores, b, N, R, cfg_.top_k, groups ? cfg_.n_groups : 1, groups ? cfg_.topk_groups : 1);
  if (cfg_.capacity_factor > 0) apply_capacity(r, expert_capacity(cfg_.capacity_factor, N, cfg_.top_k, R));
  return r;
}

Variable MoeFfn::forward(const Variable& x) {
  SW_CHECK(x.data().ndim() == 3 && x.dim(2) == d_model_, "moe", "input must be [B, T, ", d_model_, "], got ",
           x.data().describe());
  const int64_t B = x.dim(0), T = x.dim(1), N = B * T, D = d_model_, E = cfg_.n_experts, R = cfg_.n_routed();
  Variable xf = ops::reshape(x, {N, D});
  // Routing in fp32 whatever the matmul precision: top-k decisions are sensitive to rounding.
  Variable logits = ops::linear(xf, router_->weight(), nullptr, DType::f32);
  Variable scores = cfg_.score == "softmax" ? ops::softmax(logits) : ops::sigmoid(logits);
  const Tensor ts = scores.data().contiguous();
  routing_ = route(ts.data<float>(), N);
  const int64_t K = routing_.slots;

  // The SwiGLU experts see only their own ids; null experts and dropped slots are not dispatched.
  std::vector<int32_t> ffn_ids(routing_.dispatched);
  for (int32_t& e : ffn_ids)
    if (e >= E) e = -1;
  Tensor sel = Tensor::from_vector(routing_.selected, {N, K});
  Variable gates = cfg_.unit_gates ? Variable(Tensor::full({N, K}, 1.f))
                                   : ops::moe_gather_gates(scores, sel, cfg_.renormalize && !cfg_.expert_choice());
  Variable y = ops::moe_swiglu(xf, *w_gate_, *w_up_, *w_down_, Tensor::from_vector(ffn_ids, {N, K}), gates);
  if (R > E) {
    Variable consts;
    if (consts_) consts = consts_->data().dtype() == DType::f32 ? *consts_ : Variable(consts_->data().to(DType::f32));
    y = ops::add(y, ops::moe_null_experts(xf, gates, Tensor::from_vector(routing_.dispatched, {N, K}), E,
                                          cfg_.n_zero_experts, cfg_.n_copy_experts, cfg_.n_constant_experts,
                                          consts_ ? &consts : nullptr));
  }
  if (shared_) y = ops::add(y, shared_->forward(xf));

  // Load: the fraction of selections per routed expert.
  int64_t total = 0;
  for (int64_t c : routing_.counts) total += c;
  for (int64_t e = 0; e < R; ++e) load_[e] = total ? static_cast<double>(routing_.counts[e]) / total : 0.0;
  aux_ = Variable();
  if (grad_enabled()) {
    for (int64_t e = 0; e < R; ++e) step_counts_[e] += routing_.counts[e];
    if (cfg_.aux_loss_coef > 0) {
      // Switch/GShard: coef * E * sum_e f_e P_e, f_e = fraction of selections (sum 1), P_e = mean
      // routing probability (sigmoid scores normalised per token, as DeepSeek-V3's balance loss).
      Variable p = scores;
      if (cfg_.score == "sigmoid")
        p = ops::exp(ops::sub(ops::log(scores), ops::log(ops::reshape(ops::sum(scores, 1), {N, 1}))));
      std::vector<float> f(load_.begin(), load_.end());
      Variable fe(Tensor::from_vector(f, {R}));
      aux_ = ops::scale(ops::sum(ops::mul(ops::mean(p, 0), fe)), cfg_.aux_loss_coef * static_cast<double>(R));
    }
    if (cfg_.z_loss_coef > 0) {
      // logsumexp = m + log sum exp(l - m) with the row max m held constant (it cancels in the gradient).
      const Tensor tl = logits.data().contiguous();
      std::vector<float> m(N);
      for (int64_t n = 0; n < N; ++n) {
        float mx = tl.data<float>()[n * R];
        for (int64_t e = 1; e < R; ++e) mx = std::max(mx, tl.data<float>()[n * R + e]);
        m[n] = mx;
      }
      Variable mv(Tensor::from_vector(m, {N, 1}));
      Variable lse = ops::add(ops::reshape(ops::log(ops::sum(ops::exp(ops::sub(logits, mv)), 1)), {N, 1}), mv);
      Variable z = ops::scale(ops::mean(ops::square(lse)), cfg_.z_loss_coef);
      aux_ = aux_.defined() ? ops::add(aux_, z) : z;
    }
  }
  return ops::reshape(y, {B, T, D});
}

void MoeFfn::end_step() {
  // DeepSeek-V3: b_e += gamma * sign(mean load - load_e) over the selections of the step.
  if (bias_) {
    const int64_t R = cfg_.n_routed();
    double total = 0;
    for (int64_t c : step_counts_) total += static_cast<double>(c);
    if (total > 0) {
      const double mean = total / static_cast<double>(R);
      const float gamma = static_cast<float>(cfg_.bias_update_rate);
      float* b = bias_->mutable_data().data<float>();
      for (int64_t e = 0; e < R; ++e) {
        const double c = static_cast<double>(step_counts_[e]);
        if (c < mean) b[e] += gamma;
        else if (c > mean) b[e] -= gamma;
      }
    }
  }
  step_counts_.assign(cfg_.n_routed(), 0);
}

}  // namespace sw::nn
