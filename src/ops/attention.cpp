// Softmax attention as a differentiable op over the tiled (FlashAttention-2) kernel.
#include "kernels/attention/flash_attention.h"
#include "kernels/attention/sage_attention.h"
#include "ops/attention.h"

#include <algorithm>
#include <memory>
#include <vector>

namespace sw::ops {

namespace ka = kernels::attention;

namespace {

// Dims of q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv] (contiguous f32), checked.
ka::AttentionDims attention_dims(const Tensor& tq, const Tensor& tk, const Tensor& tv, const char* op) {
  SW_CHECK(tq.ndim() == 4 && tk.ndim() == 4 && tv.ndim() == 4, op, "q, k, v must be [B, T, H, D], got ",
           tq.describe(), ", ", tk.describe(), ", ", tv.describe());
  SW_CHECK(tq.dtype() == DType::f32 && tk.dtype() == DType::f32 && tv.dtype() == DType::f32, op,
           "q, k, v must be f32");
  ka::AttentionDims d;
  d.B = static_cast<int>(tq.dim(0)), d.Tq = static_cast<int>(tq.dim(1)), d.Hq = static_cast<int>(tq.dim(2));
  d.Dk = static_cast<int>(tq.dim(3)), d.Tk = static_cast<int>(tk.dim(1)), d.Hkv = static_cast<int>(tk.dim(2));
  d.Dv = static_cast<int>(tv.dim(3));
  SW_CHECK(tk.dim(0) == d.B && tv.dim(0) == d.B && tv.dim(1) == d.Tk && tv.dim(2) == d.Hkv && tk.dim(3) == d.Dk,
           op, "k ", tk.describe(), " and v ", tv.describe(), " do not match q ", tq.describe());
  SW_CHECK(d.Hkv > 0 && d.Hq % d.Hkv == 0, op, "query heads ", d.Hq, " must be a multiple of kv heads ", d.Hkv);
  return d;
}

}  // namespace

Variable attention(const Variable& q, const Variable& k, const Variable& v, const ka::AttentionParams& params,
                   const Variable* sink_logits) {
  Tensor tq = q.data().contiguous(), tk = k.data().contiguous(), tv = v.data().contiguous();
  const ka::AttentionDims d = attention_dims(tq, tk, tv, "attention");
  ka::AttentionParams p = params;
  // The backward runs after the caller's layout arrays may be gone: it keeps its own copy.
  auto layout = std::make_shared<std::pair<std::vector<int32_t>, std::vector<int32_t>>>();
  if (p.layout.block_q > 0) {
    const int64_t rows = static_cast<int64_t>(p.layout.n_layouts) * (ka::ceil_div(d.Tq, p.layout.block_q) + 1);
    layout->first.assign(p.layout.row_ptr, p.layout.row_ptr + rows);
    const int32_t nnz = rows ? *std::max_element(layout->first.begin(), layout->first.end()) : 0;
    layout->second.assign(p.layout.col_idx, p.layout.col_idx + nnz);
    p.layout.row_ptr = layout->first.data();
    p.layout.col_idx = layout->second.data();
  }
  Tensor ts;
  if (sink_logits) {
    ts = sink_logits->data().contiguous();
    SW_CHECK(ts.shape() == Shape{d.Hq} && ts.dtype() == DType::f32, "attention", "sink logits must be f32[", d.Hq,
             "], got ", ts.describe());
    p.sink_logits = ts.data<float>();
  }
  Tensor o = Tensor::empty({d.B, d.Tq, d.Hq, d.Dv}), lse = Tensor::empty({d.B, d.Hq, d.Tq});
  ka::flash_attention_forward(tq.data<float>(), tk.data<float>(), tv.data<float>(), d, p, o.data<float>(),
                              lse.data<float>());
  std::vector<Variable> in = {q, k, v, sink_logits ? *sink_logits : Variable()};
  bool need_sink = sink_logits && sink_logits->requires_grad();
  return record1("attention", in, o, [=, layout = std::move(layout)](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dq = Tensor::empty(tq.shape()), dk = Tensor::empty(tk.shape()), dv = Tensor::empty(tv.shape());
    Tensor ds = need_sink ? Tensor::empty({d.Hq}) : Tensor();
    ka::AttentionParams pb = p;
    if (ts.defined()) pb.sink_logits = ts.data<float>();
    ka::flash_attention_backward(tq.data<float>(), tk.data<float>(), tv.data<float>(), o.data<float>(),
                                 lse.data<float>(), g[0].data<float>(), nullptr, d, pb, dq.data<float>(),
                                 dk.data<float>(), dv.data<float>(), need_sink ? ds.data<float>() : nullptr);
    return {dq, dk, dv, ds};
  });
}

Variable sage_attention(const Variable& q, const Variable& k, const Variable& v, const ka::AttentionParams& params) {
  SW_CHECK(!(grad_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad())), "sage_attention",
           "SageAttention is inference only (no backward); train with impl flash");
  Tensor tq = q.data().contiguous(), tk = k.data().contiguous(), tv = v.data().contiguous();
  const ka::AttentionDims d = attention_dims(tq, tk, tv, "sage_attention");
  Tensor o = Tensor::empty({d.B, d.Tq, d.Hq, d.Dv});
  ka::sage_attention_forward(tq.data<float>(), tk.data<float>(), tv.data<float>(), d, params, true, o.data<float>(),
                             nullptr);
  return Variable(o);
}

}  // namespace sw::ops
