// Embedding lookup and the fused LM-head cross-entropy.
#include "kernels/embedding/embedding.h"
#include "kernels/loss/fused_cross_entropy.h"
#include "ops/ops.h"

namespace sw::ops {

Variable embedding(const Variable& table, const Tensor& ids) {
  Tensor tt = table.data().contiguous(), ti = ids.contiguous();
  SW_CHECK(tt.ndim() == 2 && (tt.dtype() == DType::f32 || tt.dtype() == DType::bf16), "embedding",
           "table must be f32 or bf16 [V, D], got ", tt.describe());
  SW_CHECK(ti.dtype() == DType::i32, "embedding", "ids must be i32, got ", ti.describe());
  int64_t V = tt.dim(0), D = tt.dim(1), n = ti.numel();
  const int32_t* pi = ti.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    SW_CHECK(pi[i] >= 0 && pi[i] < V, "embedding", "token id ", pi[i], " at position ", i, " is outside the vocabulary [0, ",
             V, ")");
  Shape ys = ti.shape();
  ys.push_back(D);
  Tensor y = Tensor::empty(ys);
  if (tt.dtype() == DType::f32)
    kernels::embedding_fwd(tt.data<float>(), pi, y.data<float>(), n, D);
  else
    kernels::embedding_fwd_bf16(tt.data<bf16>(), pi, y.data<float>(), n, D);
  SW_CHECK(!(table.requires_grad() && tt.dtype() == DType::bf16), "embedding", "a bf16 table cannot be trained");
  return record1("embedding", {table}, y, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dt = Tensor::zeros({V, D});
    kernels::embedding_bwd(ti.data<int32_t>(), g[0].data<float>(), dt.data<float>(), n, D);
    return {dt};
  });
}

Variable fused_cross_entropy(const Variable& h, const Variable& w, const Tensor& targets,
                             const CrossEntropyOptions& opts) {
  Tensor th = h.data().contiguous(), tw = w.data().contiguous(), tt = targets.contiguous();
  SW_CHECK(th.ndim() == 2 && th.dtype() == DType::f32, "cross_entropy", "hidden states must be f32 [N, D], got ",
           th.describe());
  SW_CHECK(tw.ndim() == 2 && tw.dim(1) == th.dim(1), "cross_entropy", "weight must be [V, ", th.dim(1), "], got ",
           tw.describe());
  SW_CHECK(tt.dtype() == DType::i32 && tt.shape() == Shape{th.dim(0)}, "cross_entropy", "targets must be i32[",
           th.dim(0), "], got ", tt.describe());
  SW_CHECK(opts.row_block > 0 && opts.vocab_chunk > 0, "cross_entropy", "row_block and vocab_chunk must be positive");
  kernels::FusedCrossEntropyDims d;
  d.n = th.dim(0), d.dim = th.dim(1), d.vocab = tw.dim(0), d.row_block = opts.row_block,
  d.vocab_chunk = opts.vocab_chunk;
  const int32_t* pt = tt.data<int32_t>();
  int64_t count = 0;
  for (int64_t i = 0; i < d.n; ++i) {
    SW_CHECK(pt[i] < d.vocab, "cross_entropy", "target ", pt[i], " at row ", i, " is outside the vocabulary [0, ",
             d.vocab, ")");
    count += pt[i] >= 0;
  }
  Tensor wk = (opts.compute == DType::bf16 && tw.dtype() != DType::bf16) ? tw.to(DType::bf16) : tw;
  Tensor loss = Tensor::empty({d.n}), lse = Tensor::empty({d.n});
  kernels::fused_cross_entropy_fwd(th.data<float>(), wk.raw_data(), wk.dtype(), pt, loss.data<float>(),
                                   lse.data<float>(), d);
  double total = 0;
  for (int64_t i = 0; i < d.n; ++i) total += loss.data<float>()[i];
  double mean_loss = count ? total / static_cast<double>(count) : 0.0;
  bool need_w = w.requires_grad();
  SW_CHECK(!(need_w && tw.dtype() == DType::bf16), "cross_entropy", "a bf16 weight cannot be trained");
  return record1("cross_entropy", {h, w}, Tensor::full({1}, mean_loss),
                 [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                   float scale = count ? static_cast<float>(g[0].item() / static_cast<double>(count)) : 0.f;
                   Tensor dloss = Tensor::full({d.n}, scale);
                   Tensor dh = Tensor::empty(th.shape());
                   Tensor dw = need_w ? Tensor::empty(tw.shape()) : Tensor();
                   kernels::fused_cross_entropy_bwd(th.data<float>(), wk.raw_data(), wk.dtype(), tt.data<int32_t>(),
                                                    lse.data<float>(), dloss.data<float>(), dh.data<float>(),
                                                    need_w ? dw.data<float>() : nullptr, d);
                   return {dh, dw};
                 });
}

}  // namespace sw::ops
