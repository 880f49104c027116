#include "train/diffusion_loss.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/hash.h"
#include "nn/layers.h"
#include "ops/ops.h"
#include "ops/rows_ops.h"
#include "train/data.h"

namespace sw::train {
namespace {

void check_clean(const Tensor& clean, int32_t mask_id, const char* what) {
  SW_CHECK(clean.ndim() == 2 && clean.dtype() == DType::i32, "diffusion", what, " must be i32 [B, T], got ",
           clean.describe());
  const int64_t B = clean.dim(0), T = clean.dim(1);
  const int32_t* x = clean.data<int32_t>();
  for (int64_t i = 0; i < B * T; ++i)
    SW_CHECK(x[i] >= 0 && x[i] != mask_id, "diffusion", what, " row ", i / T, " position ", i % T, " holds ", x[i],
             x[i] < 0 ? " (expected a token id)" : " = the [MASK] id (mask_id): data must never contain it");
}

}  // namespace

uint64_t diffusion_row_seed(uint64_t seed, int64_t step, int64_t micro, int64_t row) {
  uint64_t h = splitmix64(seed ^ 0x6d61736b64696666ull);  // "maskdiff": a stream apart from the data order's
  h = splitmix64(h ^ static_cast<uint64_t>(step));
  h = splitmix64(h ^ static_cast<uint64_t>(micro));
  return splitmix64(h ^ static_cast<uint64_t>(row));
}

DiffusionDraw make_diffusion_draw(const Tensor& clean, const std::vector<uint8_t>& masked, std::vector<double> p,
                                  int32_t mask_id) {
  check_clean(clean, mask_id, "clean ids");
  const int64_t B = clean.dim(0), T = clean.dim(1);
  SW_CHECK(static_cast<int64_t>(masked.size()) == B * T && static_cast<int64_t>(p.size()) == B, "diffusion",
           "masks must hold B * T = ", B * T, " entries and p B = ", B, ", got ", masked.size(), " and ", p.size());
  for (double v : p) SW_CHECK(v > 0 && v <= 1, "diffusion", "mask probability ", v, " outside (0, 1]");
  DiffusionDraw d;
  d.noisy = clean.clone();
  d.targets = Tensor::full({B, T}, -1, DType::i32);
  int32_t* n = d.noisy.data<int32_t>();
  int32_t* t = d.targets.data<int32_t>();
  const int32_t* x = clean.data<int32_t>();
  for (int64_t i = 0; i < B * T; ++i)
    if (masked[i]) n[i] = mask_id, t[i] = x[i];
  d.p = std::move(p);
  return d;
}

DiffusionDraw draw_forward_process(const Tensor& clean, int32_t mask_id, uint64_t seed, int64_t step, int64_t micro,
                                   const DiffusionLossOptions& o) {
  check_clean(clean, mask_id, "clean ids");
  const int64_t B = clean.dim(0), T = clean.dim(1);
  SW_CHECK(o.eps > 0 && o.eps < 1, "diffusion", "eps ", o.eps, " outside (0, 1)");
  SW_CHECK(o.prompt_lengths.empty() || static_cast<int64_t>(o.prompt_lengths.size()) == B, "diffusion",
           "prompt_lengths must hold one length per row (", B, "), got ", o.prompt_lengths.size());
  std::vector<uint8_t> masked(static_cast<size_t>(B * T), 0);
  std::vector<double> p(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    std::mt19937_64 rng(diffusion_row_seed(seed, step, micro, b));
    p[b] = (1 - o.eps) * uniform_unit(rng) + o.eps;
    for (int64_t t = 0; t < T; ++t) masked[b * T + t] = uniform_unit(rng) < p[b];
    if (!o.prompt_lengths.empty()) {  // SFT: the prompt is restored after the draw (as the reference)
      const int64_t P = o.prompt_lengths[b];
      SW_CHECK(P >= 0 && P <= T, "diffusion", "prompt length ", P, " of row ", b, " outside [0, ", T, "]");
      std::fill(masked.begin() + b * T, masked.begin() + b * T + P, 0);
    }
  }
  return make_diffusion_draw(clean, masked, std::move(p), mask_id);
}

Variable weighted_masked_cross_entropy(models::LanguageModel& model, const Tensor& noisy, const Tensor& targets,
                                       const std::vector<double>& row_weight) {
  SW_CHECK(noisy.ndim() == 2 && noisy.dtype() == DType::i32 && targets.shape() == noisy.shape() &&
               targets.dtype() == DType::i32,
           "diffusion", "noisy ids and targets must be i32 [B, T] alike, got ", noisy.describe(), " and ",
           targets.describe());
  const int64_t B = noisy.dim(0), T = noisy.dim(1), D = model.config().d_model;
  SW_CHECK(static_cast<int64_t>(row_weight.size()) == B, "diffusion", "one weight per row (", B, "), got ",
           row_weight.size());
  Variable h = ops::reshape(model.hidden(noisy), {B * T, D});
  ops::CrossEntropyOptions o;
  o.compute = nn::matmul_dtype();
  const int32_t* tg = targets.contiguous().data<int32_t>();
  Variable total;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> rows, tgt;
    for (int64_t t = 0; t < T; ++t)
      if (tg[b * T + t] >= 0) rows.push_back(static_cast<int32_t>(b * T + t)), tgt.push_back(tg[b * T + t]);
    if (rows.empty() || row_weight[b] == 0) continue;
    const int64_t c = static_cast<int64_t>(rows.size());
    Tensor ri = Tensor::empty({c}, DType::i32), ti = Tensor::empty({c}, DType::i32);
    std::copy(rows.begin(), rows.end(), ri.data<int32_t>());
    std::copy(tgt.begin(), tgt.end(), ti.data<int32_t>());
    // fused_cross_entropy is the mean over the c rows: times c gives the row's sum.
    Variable l = ops::scale(ops::fused_cross_entropy(ops::gather_rows(h, ri), model.head_weight(), ti, o),
                            row_weight[b] * static_cast<double>(c));
    total = total.defined() ? ops::add(total, l) : l;
  }
  if (!total.defined())  // nothing masked: a zero that still reaches every parameter (zero gradient)
    total = ops::fused_cross_entropy(h, model.head_weight(), Tensor::full({B * T}, -1, DType::i32), o);
  return total;
}

Variable masked_diffusion_loss(models::LanguageModel& model, const DiffusionDraw& d, const DiffusionLossOptions& o) {
  const int64_t B = d.noisy.dim(0), T = d.noisy.dim(1);
  std::vector<double> w(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    if (o.prompt_lengths.empty()) {
      w[b] = 1.0 / (d.p[b] * static_cast<double>(B * T));
    } else {
      const int64_t answer = T - o.prompt_lengths[b];
      w[b] = answer > 0 ? 1.0 / (d.p[b] * static_cast<double>(answer) * static_cast<double>(B)) : 0.0;
    }
  }
  return model.with_aux_losses(weighted_masked_cross_entropy(model, d.noisy, d.targets, w));
}

double diffusion_nll_bound(models::LanguageModel& model, const Tensor& clean, const std::vector<uint8_t>& scored,
                           int64_t n_mc, uint64_t seed, int64_t* count) {
  const int32_t mask_id = model.config().resolved_mask_id();
  check_clean(clean, mask_id, "evaluation ids");
  const int64_t B = clean.dim(0), T = clean.dim(1);
  SW_CHECK(static_cast<int64_t>(scored.size()) == B * T, "diffusion", "scored must hold B * T = ", B * T,
           " entries, got ", scored.size());
  SW_CHECK(n_mc >= 1, "diffusion", "n_mc ", n_mc, ": expected >= 1");
  NoGradGuard g;
  std::vector<std::vector<int32_t>> pos(static_cast<size_t>(B));  // the scored positions of each row
  std::vector<std::mt19937_64> rng;
  std::vector<double> v(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t)
      if (scored[b * T + t]) pos[b].push_back(static_cast<int32_t>(t));
    rng.emplace_back(diffusion_row_seed(seed, -1, 0, b));
    v[b] = uniform_unit(rng.back());
    *count += static_cast<int64_t>(pos[b].size());
  }
  const int32_t* x = clean.data<int32_t>();
  double total = 0;
  for (int64_t k = 0; k < n_mc; ++k) {
    std::vector<uint8_t> masked(static_cast<size_t>(B * T), 0);
    std::vector<double> w(static_cast<size_t>(B), 0.0);
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t L = static_cast<int64_t>(pos[b].size());
      if (L == 0) continue;
      const int64_t l = std::min<int64_t>(L, 1 + static_cast<int64_t>((v[b] + static_cast<double>(k)) /
                                                                        static_cast<double>(n_mc) * static_cast<double>(L)));
      std::vector<int32_t>& ps = pos[b];
      for (int64_t i = 0; i < l; ++i) {  // a uniform l-subset: partial Fisher-Yates over the row's positions
        const int64_t j = i + static_cast<int64_t>(uniform_below(rng[b], static_cast<uint64_t>(L - i)));
        std::swap(ps[i], ps[j]);
        masked[b * T + ps[i]] = 1;
      }
      w[b] = static_cast<double>(L) / static_cast<double>(l);
      any = true;
    }
    if (!any) break;
    Tensor noisy = clean.clone(), targets = Tensor::full({B, T}, -1, DType::i32);
    int32_t* n = noisy.data<int32_t>();
    int32_t* tg = targets.data<int32_t>();
    for (int64_t i = 0; i < B * T; ++i)
      if (masked[i]) n[i] = mask_id, tg[i] = x[i];
    total += weighted_masked_cross_entropy(model, noisy, targets, w).item();
  }
  return total / static_cast<double>(n_mc);
}

}  // namespace sw::train
