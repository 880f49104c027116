#include "nn/scan/ttt_linear.h"

#include <cmath>

#include "nn/scan/scan_common.h"
#include "ops/ops.h"
#include "ops/scan_ops.h"

namespace sw::nn {

using scan_detail::f32_param;

TttLinearState::TttLinearState(int64_t batch, int64_t heads, int64_t head_dim)
    : W(Tensor::zeros({batch, heads, head_dim, head_dim})),
      b(Tensor::zeros({batch, heads, head_dim})),
      W_grad(Tensor::zeros({batch, heads, head_dim, head_dim})),
      b_grad(Tensor::zeros({batch, heads, head_dim})) {}

int64_t TttLinearState::bytes() const {
  return static_cast<int64_t>(W.nbytes() + b.nbytes() + W_grad.nbytes() + b_grad.nbytes());
}

TttLinear::TttLinear(int64_t d_model, const TttLinearConfig& cfg, int64_t n_layers, std::mt19937_64& rng)
    : cfg_(cfg), d_model_(d_model) {
  SW_CHECK(cfg.n_heads > 0, "ttt-linear", "n_heads must be positive, got ", cfg.n_heads);
  head_dim_ = cfg.head_dim ? cfg.head_dim : d_model / cfg.n_heads;
  SW_CHECK(head_dim_ > 0 && head_dim_ % 2 == 0, "ttt-linear", "head_dim must be positive and even (RoPE), got ",
           head_dim_);
  SW_CHECK(cfg.mini_batch > 0, "ttt-linear", "mini_batch must be positive, got ", cfg.mini_batch);
  SW_CHECK(cfg.ttt_base_lr > 0 && cfg.ttt_norm_eps > 0, "ttt-linear",
           "ttt_base_lr and ttt_norm_eps must be positive, got ", cfg.ttt_base_lr, " and ", cfg.ttt_norm_eps);
  SW_CHECK(cfg.rope_base > 1, "ttt-linear", "rope_base must be > 1, got ", cfg.rope_base);
  const int64_t H = cfg.n_heads, D = head_dim_, M = cfg.mini_batch;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * n_layers);  // GPT-2 residual scaling
  token_idx_base_ = Tensor::empty({M});
  for (int64_t i = 0; i < M; ++i) token_idx_base_.data<float>()[i] = 1.f / static_cast<float>(i + 1);
  token_idx_ = &add_param("learnable_token_idx", Tensor::zeros({M}), false);
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, H * D, false, std, rng));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, H * D, false, std, rng));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, H * D, false, std, rng));
  o_proj_ = add_module("o_proj", std::make_unique<Linear>(H * D, d_model, false, out_std, rng));
  // The inner learning-rate gate: one linear unit per head over the layer input (bias 0, as the JAX code).
  lr_w_ = &add_param("learnable_ttt_lr_weight", init_normal({H, d_model}, std, rng));
  lr_b_ = &add_param("learnable_ttt_lr_bias", Tensor::zeros({H}), false);
  norm_w_ = &add_param("ttt_norm_weight", Tensor::full({H, D}, 1.0), false);
  norm_b_ = &add_param("ttt_norm_bias", Tensor::zeros({H, D}), false);
  if (cfg.use_gate) g_proj_ = add_module("g_proj", std::make_unique<Linear>(d_model, H * D, false, std, rng));
  post_w_ = &add_param("post_norm.weight", Tensor::full({H * D}, 1.0), false);
  post_b_ = &add_param("post_norm.bias", Tensor::zeros({H * D}), false);
  W1_ = &add_param("W1", init_normal({H, D, D}, std, rng));
  b1_ = &add_param("b1", Tensor::zeros({H, D}), false);
}

// The reference's permute_qk regroups channels (2i, 2i + 1) into (i, i + D/2), a rotate-half RoPE
// rotates those pairs, and undo_permute_qk restores the order.
Variable rope_consecutive_pairs(const Variable& x, const Tensor& positions, double base) {
  SW_CHECK(x.data().ndim() == 4 && x.dim(3) % 2 == 0, "rope_consecutive_pairs",
           "input must be [B, T, H, D] with D even, got ", x.data().describe());
  const int64_t B = x.dim(0), T = x.dim(1), H = x.dim(2), D = x.dim(3);
  Variable p = ops::reshape(ops::transpose(ops::reshape(x, {B * T * H, D / 2, 2}), 1, 2), {B, T, H, D});
  p = ops::rope(p, positions, D, base);
  return ops::reshape(ops::transpose(ops::reshape(p, {B * T * H, 2, D / 2}), 1, 2), {B, T, H, D});
}

// Positions restart every mini-batch, as in the reference (position_ids % mini_batch_size).
Variable TttLinear::rope(const Variable& x, int64_t first_position) const {
  const int64_t T = x.dim(1);
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>((first_position + t) % cfg_.mini_batch);
  return rope_consecutive_pairs(x, Tensor::from_vector(pos, {T}), cfg_.rope_base);
}

Variable TttLinear::forward(const Variable& x, const MixerContext& ctx) {
  SW_CHECK(x.data().ndim() == 3 && x.dim(2) == d_model_, "ttt-linear", "input must be [B, T, ", d_model_, "], got ",
           x.data().describe());
  const int64_t B = x.dim(0), T = x.dim(1), H = cfg_.n_heads, D = head_dim_;
  // An empty sequence: nothing to mix, and the state stays as it is.
  if (T == 0) return Variable(Tensor::zeros({B, 0, d_model_}));
  auto* st = static_cast<TttLinearState*>(ctx.state);
  if (st)
    SW_CHECK(st->W.dim(0) == B && st->W.dim(1) == H && st->W.dim(2) == D, "ttt-linear", "state ", st->W.describe(),
             " does not fit input ", x.data().describe(), " (expected [", B, ", ", H, ", ", D, ", ", D, "])");
  // Mini-batches (and so RoPE positions) count from the first token the layer has seen: 0 in
  // training, the state's token count in inference.
  const int64_t first = st ? st->tokens : 0;
  Variable xq = rope(ops::reshape(q_proj_->forward(x), {B, T, H, D}), first);
  Variable xk = rope(ops::reshape(k_proj_->forward(x), {B, T, H, D}), first);
  Variable xv = ops::reshape(v_proj_->forward(x), {B, T, H, D});
  Variable lr_b = *lr_b_;
  Variable eta = ops::scale(ops::sigmoid(ops::linear(x, *lr_w_, &lr_b, matmul_dtype())),
                            cfg_.ttt_base_lr / static_cast<double>(D));              // [B, T, H]
  Variable token_eta = ops::relu(ops::add(Variable(token_idx_base_), *token_idx_));  // [mini_batch]
  Variable z;
  if (st) {
    z = stateful(xq, xk, xv, eta, token_eta, *st);
  } else {
    z = ops::ttt_linear(xq, xk, xv, eta, &token_eta, f32_param(*norm_w_), f32_param(*norm_b_), *W1_, f32_param(*b1_),
                        cfg_.mini_batch, cfg_.ttt_norm_eps, false)
            .out;
  }
  Variable o = ops::layernorm(ops::reshape(z, {B, T, H * D}), post_w_, post_b_, 1e-6);
  if (g_proj_) {
    // gelu with the tanh approximation (the reference's, to match its JAX code), written through
    // 0.5 (1 + tanh(a)) = sigmoid(2a): y * sigmoid(2 sqrt(2/pi) (y + 0.044715 y^3)).
    Variable y = g_proj_->forward(x);
    Variable a = ops::add(y, ops::scale(ops::mul(ops::square(y), y), 0.044715));
    o = ops::mul(ops::mul(y, ops::sigmoid(ops::scale(a, 2.0 * std::sqrt(2.0 / M_PI)))), o);
  }
  return o_proj_->forward(o);
}

Variable TttLinear::stateful(const Variable& xq, const Variable& xk, const Variable& xv, const Variable& eta,
                             const Variable& token_eta, TttLinearState& st) {
  const int64_t B = xq.dim(0), T = xq.dim(1), H = xq.dim(2), D = xq.dim(3), M = cfg_.mini_batch;
  if (!st.initialised) {  // every sequence starts from the layer's W1, b1
    for (int64_t i = 0; i < B; ++i) {
      st.W.select(0, i).copy_from(W1_->data());
      st.b.select(0, i).copy_from(b1_->data());
    }
    st.W_grad.zero();
    st.b_grad.zero();
    st.initialised = true;
  }
  const int64_t pos0 = st.tokens % M;
  const int64_t head = pos0 ? std::min(T, M - pos0) : 0;
  const int64_t full = (T - head) / M * M;
  const int64_t tail = T - head - full;
  SW_CHECK(!(grad_enabled() && (head || tail) && (xq.requires_grad() || eta.requires_grad())), "ttt-linear",
           "a stateful forward of ", T, " tokens from position ", pos0,
           " of a mini-batch runs the decode step on partial mini-batches, which is not differentiable; run it "
           "under NoGradGuard or keep stateful training calls on mini-batch boundaries");
  Variable gamma = f32_param(*norm_w_), beta = f32_param(*norm_b_);
  const std::vector<float> te = token_eta.data().to_floats();
  std::vector<Variable> pieces;
  auto step = [&](int64_t t) {
    auto row = [&](const Variable& v, const Shape& s) { return v.data().slice(1, t, t + 1).contiguous().reshape(s); };
    const int64_t p = st.tokens % M;
    Tensor out = ops::ttt_linear_step(row(xq, {B, H, D}), row(xk, {B, H, D}), row(xv, {B, H, D}), row(eta, {B, H}),
                                      te[p], gamma.data(), beta.data(), st.W, st.b, st.W_grad, st.b_grad, p == M - 1,
                                      cfg_.ttt_norm_eps);
    ++st.tokens;
    pieces.push_back(Variable(out.reshape({B, 1, H, D})));
  };
  for (int64_t t = 0; t < head; ++t) step(t);
  if (full) {
    // On a mini-batch boundary the accumulators are zero: the dual form continues from (W, b).
    auto part = [&](const Variable& v) { return ops::slice(v, 1, head, head + full); };
    ops::TttLinearResult r = ops::ttt_linear(part(xq), part(xk), part(xv), part(eta), &token_eta, gamma, beta,
                                             Variable(st.W), Variable(st.b), M, cfg_.ttt_norm_eps, true);
    st.W = r.W.data();  // fresh tensors: what a backward may have kept of the old ones is not touched
    st.b = r.b.data();
    st.tokens += full;
    pieces.push_back(r.out);
  }
  for (int64_t t = head + full; t < T; ++t) step(t);
  return pieces.size() == 1 ? pieces[0] : ops::concat(pieces, 1);
}

std::unique_ptr<LayerState> TttLinear::new_state(int64_t batch) const {
  return std::make_unique<TttLinearState>(batch, cfg_.n_heads, head_dim_);
}

int64_t TttLinear::state_bytes(int64_t) const {
  // W, b and their accumulated gradients.
  return 2 * cfg_.n_heads * (head_dim_ * head_dim_ + head_dim_) * static_cast<int64_t>(sizeof(float));
}

double TttLinear::extra_flops_per_token(int64_t) const {
  // Per head: the inner gradient at the mini-batch start (xk W: 2 D^2), the readout (xq W: 2 D^2), the
  // update (xk^T G: 2 D^2), the dual-form terms against the earlier tokens of the mini-batch (on
  // average (M + 1) / 2 of them, a dot and an axpy of D each), and the two inner LayerNorms (~20 D).
  const double D = static_cast<double>(head_dim_), M = static_cast<double>(cfg_.mini_batch);
  return static_cast<double>(cfg_.n_heads) * (6.0 * D * D + 2.0 * (M + 1.0) * D + 20.0 * D);
}

}  // namespace sw::nn
