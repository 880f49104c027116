#include "models/mixture_of_depths.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/bounded_json.h"
#include "core/error.h"
#include "ops/ops.h"
#include "ops/rows_ops.h"

namespace sw::models {

using json = nlohmann::json;

bool depth_routed(const MixtureOfDepthsConfig& c, int64_t layer) {
  return c.every > 0 && (layer + 1) % c.every == 0;
}

int64_t depth_capacity_tokens(double capacity, int64_t T) {
  if (T <= 0) return 0;
  // capacity * T is often an integer that rounding lifts by one ulp (0.1 * 30); a 1e-9 slack keeps
  // ceil from adding a token there and is far below 1 / T for any sequence length.
  const auto k = static_cast<int64_t>(std::ceil(capacity * static_cast<double>(T) - 1e-9));
  return std::clamp<int64_t>(k, 1, T);
}

std::vector<int32_t> top_k_positions(const float* scores, int64_t B, int64_t T, int64_t k) {
  SW_CHECK(k >= 0 && k <= T, "mixture_of_depths", "top-k of ", k, " out of ", T, " tokens");
  std::vector<int32_t> out(static_cast<size_t>(B * k));
  std::vector<int32_t> idx(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b) {
    const float* s = scores + b * T;
    auto key = [s](int32_t t) { return std::isnan(s[t]) ? -INFINITY : s[t]; };
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t c) {
      const float ka = key(a), kc = key(c);
      return ka > kc || (ka == kc && a < c);
    });
    std::sort(idx.begin(), idx.begin() + k);  // the block sees its tokens in their original order
    std::copy(idx.begin(), idx.begin() + k, out.begin() + b * k);
  }
  return out;
}

namespace {

// Mixers whose tokens a routed block may take: they either read MixerContext::positions (softmax
// attention with full causal attention) or no positions at all. Refused: those that compute
// positions as context.position + index (MLA, RetNet's xPos-like decay, the YOCO cross-decoder),
// which a subset of tokens would silently shift, and attention windows / block-sparse patterns,
// which count keys by index.
void check_routable_mixer(const json& m, const std::string& at, int64_t layer) {
  const std::string type = m.value("type", std::string());
  auto refuse = [&](const std::string& reason) {
    throw Error(str_cat("[config] ", at, ": block ", layer, " is depth-routed (mixture_of_depths.every), but mixer '",
                        type, "' cannot be: ", reason,
                        "; route other blocks (mixture_of_depths.every) or give this block another mixer"));
  };
  if (type == "yoco-cross") refuse("a YOCO cross-decoder reads the one shared KV of every token");
  if (type == "mla" || type == "retnet")
    refuse("it derives positions from the token index, not from the routed tokens' original positions");
  if (type == "attention") {
    if (m.contains("window") && m["window"].is_number_integer() && m["window"].get<int64_t>() > 0)
      refuse(str_cat("its window ", m["window"].get<int64_t>(), " counts keys by index, not by position"));
    if (m.contains("sparse_block") && m["sparse_block"].is_number_integer() && m["sparse_block"].get<int64_t>() > 0)
      refuse("its block-sparse pattern (sparse_block) counts keys by index, not by position");
    if (m.contains("moba_block") && m["moba_block"].is_number_integer() && m["moba_block"].get<int64_t>() > 0)
      refuse("MoBA (moba_block) selects key blocks by index, not by position");
  }
  if (type == "parallel" && m.contains("branches") && m["branches"].is_array())
    for (size_t i = 0; i < m["branches"].size(); ++i)
      check_routable_mixer(m["branches"][i], str_cat(at, ".branches[", i, "]"), layer);
}

}  // namespace

void check_mixture_of_depths(const ModelConfig& c, const std::vector<LayerSpec>& schedule, const std::string& where) {
  const MixtureOfDepthsConfig& m = c.mixture_of_depths;
  const std::string at = where + ".mixture_of_depths";
  SW_CHECK(std::isfinite(m.capacity) && m.capacity > 0 && m.capacity <= 1, "config", at,
           ".capacity: expected a number in (0, 1] (the fraction of each sequence's tokens a routed block takes), got ",
           m.capacity);
  SW_CHECK(m.every >= 0 && m.every <= 4096, "config", at, ".every: expected an integer in [0, 4096] (0 = off), got ",
           m.every);
  SW_CHECK(std::isfinite(m.aux_loss_coef) && m.aux_loss_coef >= 0 && m.aux_loss_coef <= 1000, "config", at,
           ".aux_loss_coef: expected a number in [0, 1000], got ", m.aux_loss_coef);
  SW_CHECK(m.scale == "sigmoid" || m.scale == "logit", "config", at, ".scale: expected sigmoid or logit, got '",
           cut_text(m.scale), "'");
  if (!m.enabled()) return;
  SW_CHECK(m.every <= c.n_layers, "config", at, ".every: ", m.every, " routes no block of n_layers ", c.n_layers,
           "; expected an integer in [1, ", c.n_layers, "] (or 0 = off)");
  for (size_t i = 0; i < schedule.size(); ++i) {
    if (!depth_routed(m, static_cast<int64_t>(i))) continue;
    const LayerSpec& spec = schedule[i];
    SW_CHECK(!spec.shared, "config", where, ".shared: block ", i, " ('", spec.mixer_name,
             "') is shared and depth-routed (mixture_of_depths.every ", m.every,
             "); a shared block is not routed (one router would serve several depths): unshare it or change every");
    check_routable_mixer(spec.mixer, spec.mixer_name.empty() ? where + ".mixer" : where + ".mixers." + spec.mixer_name,
                         static_cast<int64_t>(i));
  }
}

DepthRouter::DepthRouter(int64_t d_model, const MixtureOfDepthsConfig& cfg, int64_t layer, double init_std,
                         std::mt19937_64& rng)
    : cfg_(cfg), layer_(layer) {
  w_ = &add_param("weight", nn::init_normal({1, d_model}, init_std, rng));
}

Variable DepthRouter::forward(const Variable& x, const nn::MixerContext& ctx, const Delta& delta) {
  SW_CHECK(x.shape().size() == 3, "mixture_of_depths", "x must be [B, T, D], got ", shape_str(x.shape()));
  const int64_t B = x.dim(0), T = x.dim(1), D = x.dim(2);
  // r [B, T, 1] in fp32 whatever the GEMM precision of the blocks: it decides which tokens run.
  const Variable r = ops::linear(x, *w_, nullptr, DType::f32);
  const Tensor rd = r.data().contiguous();
  const float* rp = rd.data<float>();
  std::vector<int32_t> pos;
  int64_t k = 0;
  aux_ = Variable();
  // Causal routing wherever no gradient is taken (evaluation, generation), so a validation loss never
  // sees which later tokens out-rank a token; the non-causal top-k only trains.
  const bool causal = ctx.state || !grad_enabled();
  if (!causal) {  // training: top-k per sequence
    k = depth_capacity_tokens(cfg_.capacity, T);
    pos = top_k_positions(rp, B, T, k);
    if (cfg_.aux_loss_coef > 0) {
      // BCE(sigmoid(z), y) = softplus(z) - y z, stable for any z; z = sg(x) . w_r reaches w_r only.
      Tensor target = Tensor::zeros({B, T, 1});
      float* tp = target.data<float>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < k; ++j) tp[b * T + pos[b * k + j]] = 1.f;
      const Variable z = ops::linear(x.detach(), *w_, nullptr, DType::f32);
      aux_ = ops::scale(ops::mean(ops::sub(ops::softplus(z), ops::mul(z, Variable(target)))), cfg_.aux_loss_coef);
    }
  } else {  // inference: causal threshold, token by token
    std::vector<int64_t> count(static_cast<size_t>(B), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        if (rp[b * T + t] > 0.f) pos.push_back(static_cast<int32_t>(t)), ++count[b];
    k = count[0];
    const bool diverge = std::any_of(count.begin(), count.end(), [&](int64_t c) { return c != k; });
    if (diverge && !ctx.state) {  // no state to share: each row runs its own tokens
      std::vector<Variable> rows;
      for (int64_t b = 0; b < B; ++b) rows.push_back(forward(ops::slice(x, 0, b, b + 1), ctx, delta));
      return ops::concat(rows, 0);
    }
    for (int64_t b = 1; b < B; ++b)
      SW_CHECK(count[b] == k, "mixture_of_depths", "block ", layer_, ": batch rows route different numbers of tokens (",
               "row 0: ", k, ", row ", b, ": ", count[b], " of ", T,
               ") at inference; a routed block's state holds only its own tokens and the batch shares one state ",
               "length, so run such sequences at batch 1");
  }
  last_per_row_ = k;
  last_positions_ = pos;
  if (k == 0) return x;  // no token takes the block: its state is untouched
  std::vector<int32_t> rows(pos.size()), abs_pos(pos.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < k; ++j) {
      const size_t i = static_cast<size_t>(b * k + j);
      rows[i] = static_cast<int32_t>(b * T + pos[i]);
      abs_pos[i] = static_cast<int32_t>(ctx.position + pos[i]);
    }
  const Tensor row_ids = Tensor::from_vector(rows, {B * k});
  nn::MixerContext sub = ctx;
  sub.positions = Tensor::from_vector(abs_pos, {B, k});
  const Variable xs = ops::reshape(ops::gather_rows(ops::reshape(x, {B * T, D}), row_ids), {B, k, D});
  const Variable f = delta(xs, sub);
  SW_CHECK(f.shape() == (Shape{B, k, D}), "mixture_of_depths", "the block's delta must be [", B, ", ", k, ", ", D,
           "], got ", shape_str(f.shape()));
  const Variable r_sel = ops::gather_rows(ops::reshape(r, {B * T, 1}), row_ids);  // [B * k, 1]
  const Variable s = cfg_.scale == "sigmoid" ? ops::sigmoid(r_sel) : r_sel;
  const Variable y = ops::mul(ops::reshape(f, {B * k, D}), s);
  return ops::add(x, ops::reshape(ops::scatter_rows(y, row_ids, B * T), {B, T, D}));
}

}  // namespace sw::models
