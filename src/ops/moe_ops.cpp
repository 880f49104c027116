#include "ops/moe_ops.h"

#include <memory>
#include <vector>

#include "kernels/moe/moe_dispatch.h"

namespace sw::ops {
namespace {

// The dispatch plan of one call, shared by its forward and backward.
struct Plan {
  std::vector<int64_t> offsets;       // [E + 1]
  std::vector<int32_t> slot_assign;   // [N * k], first S valid
  std::vector<int32_t> assign_slot;   // [N * k]
  int64_t slots = 0;
};

void check_selection(const Tensor& sel, int64_t N, int64_t k, int64_t E, const char* op, const char* what) {
  SW_CHECK(sel.dtype() == DType::i32 && sel.shape() == Shape({N, k}), op, what, " must be i32[", N, ", ", k, "], got ",
           sel.describe());
  const int32_t* p = sel.data<int32_t>();
  for (int64_t i = 0; i < N * k; ++i)
    SW_CHECK(p[i] >= -1 && p[i] < E, op, what, "[", i / k, ", ", i % k, "] = ", p[i], " outside -1..", E - 1);
}

}  // namespace

Variable moe_swiglu(const Variable& x, const Variable& w_gate, const Variable& w_up, const Variable& w_down,
                    const Tensor& idx, const Variable& gates) {
  Tensor tx = x.data().contiguous(), twg = w_gate.data().contiguous(), twu = w_up.data().contiguous(),
         twd = w_down.data().contiguous(), tg = gates.data().contiguous(), ti = idx.contiguous();
  SW_CHECK(tx.ndim() == 2 && tx.dtype() == DType::f32, "moe_swiglu", "x must be f32 [N, D], got ", tx.describe());
  const int64_t N = tx.dim(0), D = tx.dim(1);
  SW_CHECK(twg.ndim() == 3 && twg.dim(2) == D, "moe_swiglu", "w_gate must be [E, H, ", D, "], got ", twg.describe());
  const int64_t E = twg.dim(0), H = twg.dim(1);
  SW_CHECK(twu.shape() == twg.shape() && twu.dtype() == twg.dtype(), "moe_swiglu", "w_up ", twu.describe(),
           " must match w_gate ", twg.describe());
  SW_CHECK(twd.shape() == Shape({E, D, H}) && twd.dtype() == twg.dtype(), "moe_swiglu", "w_down must be ",
           dtype_name(twg.dtype()), "[", E, ", ", D, ", ", H, "], got ", twd.describe());
  SW_CHECK(twg.dtype() == DType::f32 || twg.dtype() == DType::bf16, "moe_swiglu", "weights must be f32 or bf16");
  SW_CHECK(ti.ndim() == 2 && ti.dim(0) == N, "moe_swiglu", "idx must be i32 [", N, ", k], got ", ti.describe());
  const int64_t k = ti.dim(1);
  check_selection(ti, N, k, E, "moe_swiglu", "idx");
  SW_CHECK(tg.shape() == Shape({N, k}) && tg.dtype() == DType::f32, "moe_swiglu", "gates must be f32[", N, ", ", k,
           "], got ", tg.describe());
  const bool need_x = x.requires_grad(), need_g = gates.requires_grad();
  const bool need_w = w_gate.requires_grad() || w_up.requires_grad() || w_down.requires_grad();
  SW_CHECK(!(need_w && twg.dtype() == DType::bf16), "moe_swiglu", "bf16 expert weights cannot be trained");

  auto plan = std::make_shared<Plan>();
  plan->offsets.resize(E + 1);
  plan->slot_assign.resize(N * k);
  plan->assign_slot.resize(N * k);
  plan->slots = kernels::moe_build_plan(ti.data<int32_t>(), N * k, E, plan->offsets.data(), plan->slot_assign.data(),
                                        plan->assign_slot.data());
  const int64_t S = plan->slots;
  kernels::MoeExpertWeights w{twg.raw_data(), twu.raw_data(), twd.raw_data(), twg.dtype(), E, H, D};
  Tensor xs = Tensor::empty({S, D}), hg = Tensor::empty({S, H}), hu = Tensor::empty({S, H}),
         act = Tensor::empty({S, H}), ys = Tensor::empty({S, D}), y = Tensor::empty({N, D});
  if (S > 0) {
    kernels::moe_gather(tx.data<float>(), plan->slot_assign.data(), S, k, D, xs.data<float>());
    kernels::moe_swiglu_experts_fwd(xs.data<float>(), plan->offsets.data(), w, hg.data<float>(), hu.data<float>(),
                                    act.data<float>(), ys.data<float>());
  }
  kernels::moe_combine(ys.data<float>(), plan->assign_slot.data(), tg.data<float>(), N, k, D, y.data<float>());
  if (!any_requires_grad({x, w_gate, w_up, w_down, gates})) return Variable(y);
  const bool need_wg = w_gate.requires_grad(), need_wu = w_up.requires_grad(), need_wd = w_down.requires_grad();
  return record1("moe_swiglu", {x, w_gate, w_up, w_down, gates}, y,
                 [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
                   // The closure owns the weight tensors the raw pointers below read.
                   const kernels::MoeExpertWeights w{twg.raw_data(), twu.raw_data(), twd.raw_data(), twg.dtype(),
                                                     E, H, D};
                   const Tensor gy = grads[0].contiguous();
                   Tensor dys = Tensor::empty({S, D}), dg = Tensor::empty({N, k});
                   kernels::moe_combine_backward(gy.data<float>(), ys.data<float>(), plan->assign_slot.data(),
                                                 tg.data<float>(), N, k, D, dys.data<float>(), dg.data<float>());
                   Tensor dx, dwg, dwu, dwd;
                   if (need_x || need_w) {
                     Tensor dxs = Tensor::empty({S, D}), dact = Tensor::empty({S, H}), dhg = Tensor::empty({S, H}),
                            dhu = Tensor::empty({S, H});
                     if (need_wg) dwg = Tensor::empty({E, H, D});
                     if (need_wu) dwu = Tensor::empty({E, H, D});
                     if (need_wd) dwd = Tensor::empty({E, D, H});
                     kernels::moe_swiglu_experts_bwd(
                         xs.data<float>(), plan->offsets.data(), w, hg.data<float>(), hu.data<float>(),
                         act.data<float>(), dys.data<float>(), need_x ? dxs.data<float>() : nullptr,
                         need_wg ? dwg.data<float>() : nullptr, need_wu ? dwu.data<float>() : nullptr,
                         need_wd ? dwd.data<float>() : nullptr, dact.data<float>(), dhg.data<float>(),
                         dhu.data<float>());
                     if (need_x) {
                       dx = Tensor::empty({N, D});
                       kernels::moe_gather_backward(dxs.data<float>(), plan->assign_slot.data(), N, k, D,
                                                    dx.data<float>());
                     }
                   }
                   return {dx, dwg, dwu, dwd, need_g ? dg : Tensor()};
                 });
}

Variable moe_gather_gates(const Variable& scores, const Tensor& sel, bool renormalize) {
  Tensor ts = scores.data().contiguous(), tsel = sel.contiguous();
  SW_CHECK(ts.ndim() == 2 && ts.dtype() == DType::f32, "moe_gather_gates", "scores must be f32 [N, E], got ",
           ts.describe());
  const int64_t N = ts.dim(0), E = ts.dim(1);
  SW_CHECK(tsel.ndim() == 2 && tsel.dim(0) == N, "moe_gather_gates", "sel must be i32 [", N, ", k], got ",
           tsel.describe());
  const int64_t k = tsel.dim(1);
  check_selection(tsel, N, k, E, "moe_gather_gates", "sel");
  Tensor g = Tensor::empty({N, k}), z = Tensor::empty({N});  // z: the renormaliser of each row
  const float* s = ts.data<float>();
  const int32_t* ps = tsel.data<int32_t>();
  float* pg = g.data<float>();
  float* pz = z.data<float>();
  for (int64_t n = 0; n < N; ++n) {
    float sum = 0.f;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = ps[n * k + j];
      pg[n * k + j] = e < 0 ? 0.f : s[n * E + e];
      sum += pg[n * k + j];
    }
    pz[n] = renormalize ? sum : 1.f;
    SW_CHECK(pz[n] > 0.f, "moe_gather_gates", "row ", n, ": the selected scores sum to ", sum,
             " (renormalising needs positive scores)");
    if (renormalize)
      for (int64_t j = 0; j < k; ++j) pg[n * k + j] /= sum;
  }
  return record1("moe_gather_gates", {scores}, g, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
    const int32_t* ps = tsel.data<int32_t>();  // the closure owns tsel, g and z
    const Tensor gy = grads[0].contiguous();
    const float* dg = gy.data<float>();
    const float* gv = g.data<float>();
    const float* zv = z.data<float>();
    Tensor ds = Tensor::zeros({N, E});
    float* pd = ds.data<float>();
    for (int64_t n = 0; n < N; ++n) {
      // g_j = s_j / Z: ds_j = (dg_j - sum_i dg_i g_i) / Z (without renormalising: ds_j = dg_j).
      float dot = 0.f;
      if (renormalize)
        for (int64_t j = 0; j < k; ++j) dot += dg[n * k + j] * gv[n * k + j];
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = ps[n * k + j];
        if (e >= 0) pd[n * E + e] += (dg[n * k + j] - dot) / zv[n];
      }
    }
    return {ds};
  });
}

Variable moe_null_experts(const Variable& x, const Variable& gates, const Tensor& sel, int64_t first_null,
                          int64_t n_zero, int64_t n_copy, int64_t n_const, const Variable* consts) {
  Tensor tx = x.data().contiguous(), tg = gates.data().contiguous(), tsel = sel.contiguous();
  SW_CHECK(tx.ndim() == 2 && tx.dtype() == DType::f32, "moe_null_experts", "x must be f32 [N, D], got ",
           tx.describe());
  const int64_t N = tx.dim(0), D = tx.dim(1);
  SW_CHECK(tsel.ndim() == 2 && tsel.dim(0) == N && tsel.dtype() == DType::i32, "moe_null_experts",
           "sel must be i32 [", N, ", k], got ", tsel.describe());
  const int64_t k = tsel.dim(1);
  SW_CHECK(tg.shape() == tsel.shape() && tg.dtype() == DType::f32, "moe_null_experts", "gates must be f32[", N, ", ",
           k, "], got ", tg.describe());
  SW_CHECK(first_null >= 0 && n_zero >= 0 && n_copy >= 0 && n_const >= 0, "moe_null_experts", "negative expert range");
  Tensor tc;
  if (n_const > 0) {
    SW_CHECK(consts != nullptr, "moe_null_experts", n_const, " constant experts need their vectors");
    tc = consts->data().contiguous();
    SW_CHECK(tc.shape() == Shape({n_const, D}) && tc.dtype() == DType::f32, "moe_null_experts",
             "consts must be f32[", n_const, ", ", D, "], got ", tc.describe());
  }
  // kind of an expert id: 0 = not a null expert or a zero expert (no output), 1 = copy, 2 + c = constant c.
  auto kind = [=](int32_t e) -> int64_t {
    const int64_t r = static_cast<int64_t>(e) - first_null - n_zero;
    if (e < 0 || r < 0 || r >= n_copy + n_const) return 0;
    return r < n_copy ? 1 : 2 + (r - n_copy);
  };
  Tensor y = Tensor::zeros({N, D});
  const float* px = tx.data<float>();
  const float* pg = tg.data<float>();
  const int32_t* ps = tsel.data<int32_t>();
  const float* pc = tc.defined() ? tc.data<float>() : nullptr;
  float* py = y.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t kd = kind(ps[n * k + j]);
      if (kd == 0) continue;
      const float* src = kd == 1 ? px + n * D : pc + (kd - 2) * D;
      const float g = pg[n * k + j];
      for (int64_t d = 0; d < D; ++d) py[n * D + d] += g * src[d];
    }
  std::vector<Variable> inputs = {x, gates};
  if (n_const > 0) inputs.push_back(*consts);
  return record1("moe_null_experts", inputs, y, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
    const float* px = tx.data<float>();  // the closure owns tx, tg, tsel and tc
    const float* pg = tg.data<float>();
    const int32_t* ps = tsel.data<int32_t>();
    const float* pc = tc.defined() ? tc.data<float>() : nullptr;
    const Tensor gy = grads[0].contiguous();
    const float* dy = gy.data<float>();
    Tensor dx = Tensor::zeros({N, D}), dg = Tensor::zeros({N, k}), dc;
    if (n_const > 0) dc = Tensor::zeros({n_const, D});
    float* pdx = dx.data<float>();
    float* pdg = dg.data<float>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t kd = kind(ps[n * k + j]);
        if (kd == 0) continue;
        const float g = pg[n * k + j];
        const float* src = kd == 1 ? px + n * D : pc + (kd - 2) * D;
        float* dst = kd == 1 ? pdx + n * D : dc.data<float>() + (kd - 2) * D;
        float dot = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          dot += dy[n * D + d] * src[d];
          dst[d] += g * dy[n * D + d];
        }
        pdg[n * k + j] = dot;
      }
    if (n_const > 0) return {dx, dg, dc};
    return {dx, dg};
  });
}

}  // namespace sw::ops
