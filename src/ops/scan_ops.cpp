// The scan ops (ops/scan_ops.h): argument checks, kernel calls, backward closures.
#include "ops/scan_ops.h"

#include <cstring>

#include "kernels/scan/elementwise_scan.h"
#include "kernels/scan/selective_scan.h"
#include "kernels/scan/ttt_linear.h"

namespace sw::ops {
namespace {

namespace ks = kernels::scan;

// The contiguous f32 data of an input that must have exactly `shape`.
Tensor checked(const Variable& v, const Shape& shape, const char* op, const char* what) {
  SW_CHECK(v.defined(), op, what, " is undefined (expected f32", shape_str(shape), ")");
  Tensor t = v.data().contiguous();
  SW_CHECK(t.dtype() == DType::f32 && t.shape() == shape, op, what, " must be f32", shape_str(shape), ", got ",
           t.describe());
  return t;
}
Tensor checked(const Tensor& v, const Shape& shape, const char* op, const char* what) {
  SW_CHECK(v.defined() && v.dtype() == DType::f32 && v.shape() == shape, op, what, " must be f32", shape_str(shape),
           ", got ", v.defined() ? v.describe() : std::string("undefined"));
  return v.contiguous();
}
// A state tensor updated in place by a step: it must already be contiguous (a copy would lose the update).
void check_state(const Tensor& s, const Shape& shape, const char* op, const char* what) {
  SW_CHECK(s.defined() && s.dtype() == DType::f32 && s.shape() == shape && s.is_contiguous(), op, what,
           " must be a contiguous f32", shape_str(shape), ", got ",
           s.defined() ? s.describe() : std::string("undefined"));
}

const float* ptr(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
float* mptr(Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
bool needs(const Variable* v) { return v && v->defined() && v->requires_grad(); }
Tensor empty_if(bool cond, const Shape& s) { return cond ? Tensor::empty(s) : Tensor(); }

}  // namespace

// ---- selective scan ------------------------------------------------------------------------------

ScanResult selective_scan(const Variable& u, const Variable& delta, const Variable& A, const Variable& Bm,
                          const Variable& Cm, const Variable* Dskip, const Variable* z, const Variable* delta_bias,
                          const Variable* h0, bool delta_softplus, bool final_state, ks::ScanForm form) {
  const char* op = "selective_scan";
  SW_CHECK(u.defined() && u.data().ndim() == 3, op, "u must be [B, T, D], got ",
           u.defined() ? u.data().describe() : std::string("undefined"));
  SW_CHECK(A.defined() && A.data().ndim() == 2, op, "A must be [D, N], got ",
           A.defined() ? A.data().describe() : std::string("undefined"));
  const int64_t B = u.dim(0), T = u.dim(1), D = u.dim(2), N = A.dim(1);
  Tensor tu = checked(u, {B, T, D}, op, "u");
  Tensor tdelta = checked(delta, {B, T, D}, op, "delta");
  Tensor tA = checked(A, {D, N}, op, "A");
  Tensor tB = checked(Bm, {B, T, N}, op, "Bm");
  Tensor tC = checked(Cm, {B, T, N}, op, "Cm");
  Tensor tD = Dskip ? checked(*Dskip, {D}, op, "Dskip") : Tensor();
  Tensor tz = z ? checked(*z, {B, T, D}, op, "z") : Tensor();
  Tensor tbias = delta_bias ? checked(*delta_bias, {D}, op, "delta_bias") : Tensor();
  Tensor th0 = h0 ? checked(*h0, {B, D, N}, op, "h0") : Tensor();

  ks::SelectiveScanInputs in;
  in.u = ptr(tu), in.delta = ptr(tdelta), in.A = ptr(tA), in.Bm = ptr(tB), in.Cm = ptr(tC);
  in.Dskip = ptr(tD), in.z = ptr(tz), in.delta_bias = ptr(tbias), in.h0 = ptr(th0);
  in.delta_softplus = delta_softplus;
  in.B = B, in.T = T, in.D = D, in.N = N;
  Tensor out = Tensor::empty({B, T, D});
  Tensor ht = final_state ? Tensor::empty({B, D, N}) : Tensor();
  ks::selective_scan_fwd(in, out.data<float>(), mptr(ht), form);

  std::vector<Variable> inputs = {u, delta, A, Bm, Cm};
  for (const Variable* opt : {Dskip, z, delta_bias, h0}) inputs.push_back(opt ? *opt : Variable());
  const bool need_u = u.requires_grad(), need_delta = delta.requires_grad(), need_A = A.requires_grad();
  const bool need_B = Bm.requires_grad(), need_C = Cm.requires_grad(), need_D = needs(Dskip), need_z = needs(z);
  const bool need_bias = needs(delta_bias), need_h0 = needs(h0);
  std::vector<Tensor> outs = {out};
  if (final_state) outs.push_back(ht);
  // The backward recomputes the states from the inputs, so it keeps the inputs but not the output.
  auto v = record(op, inputs, outs, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    ks::SelectiveScanInputs bin = in;  // pointers into the captured tensors, which stay alive with this closure
    bin.u = ptr(tu), bin.delta = ptr(tdelta), bin.A = ptr(tA), bin.Bm = ptr(tB), bin.Cm = ptr(tC);
    bin.Dskip = ptr(tD), bin.z = ptr(tz), bin.delta_bias = ptr(tbias), bin.h0 = ptr(th0);
    Tensor du = empty_if(need_u, {B, T, D}), ddelta = empty_if(need_delta, {B, T, D}), dA = empty_if(need_A, {D, N});
    Tensor dB = empty_if(need_B, {B, T, N}), dC = empty_if(need_C, {B, T, N}), dD = empty_if(need_D, {D});
    Tensor dz = empty_if(need_z, {B, T, D}), dbias = empty_if(need_bias, {D}), dh0 = empty_if(need_h0, {B, D, N});
    ks::SelectiveScanGrads gr;
    gr.du = mptr(du), gr.ddelta = mptr(ddelta), gr.dA = mptr(dA), gr.dBm = mptr(dB), gr.dCm = mptr(dC);
    gr.dDskip = mptr(dD), gr.dz = mptr(dz), gr.ddelta_bias = mptr(dbias), gr.dh0 = mptr(dh0);
    Tensor dout = g[0].contiguous();
    Tensor dht = final_state ? g[1].contiguous() : Tensor();
    ks::selective_scan_bwd(bin, dout.data<float>(), ptr(dht), gr, form);
    return {du, ddelta, dA, dB, dC, dD, dz, dbias, dh0};
  });
  ScanResult r;
  r.out = v[0];
  if (final_state) r.final_state = v[1];
  return r;
}

Tensor selective_scan_step(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                           const Tensor* Dskip, const Tensor* z, const Tensor* delta_bias, bool delta_softplus,
                           Tensor& h) {
  const char* op = "selective_scan_step";
  SW_CHECK(u.defined() && u.ndim() == 2 && A.defined() && A.ndim() == 2, op, "u must be [B, D] and A [D, N], got ",
           u.defined() ? u.describe() : std::string("undefined"), " and ",
           A.defined() ? A.describe() : std::string("undefined"));
  const int64_t B = u.dim(0), D = u.dim(1), N = A.dim(1);
  Tensor tu = checked(u, {B, D}, op, "u"), tdelta = checked(delta, {B, D}, op, "delta");
  Tensor tA = checked(A, {D, N}, op, "A"), tB = checked(Bm, {B, N}, op, "Bm"), tC = checked(Cm, {B, N}, op, "Cm");
  Tensor tD = Dskip ? checked(*Dskip, {D}, op, "Dskip") : Tensor();
  Tensor tz = z ? checked(*z, {B, D}, op, "z") : Tensor();
  Tensor tbias = delta_bias ? checked(*delta_bias, {D}, op, "delta_bias") : Tensor();
  check_state(h, {B, D, N}, op, "state h");
  Tensor out = Tensor::empty({B, D});
  ks::selective_scan_step(ptr(tu), ptr(tdelta), ptr(tA), ptr(tB), ptr(tC), ptr(tD), ptr(tz), ptr(tbias), delta_softplus,
                          h.data<float>(), out.data<float>(), B, D, N);
  return out;
}

// ---- HGRN ----------------------------------------------------------------------------------------

ScanResult hgrn_scan(const Variable& x, const Variable& g, const Variable* h0, bool final_state, ks::ScanForm form) {
  const char* op = "hgrn_scan";
  SW_CHECK(x.defined() && x.data().ndim() == 3, op, "x must be [B, T, D], got ",
           x.defined() ? x.data().describe() : std::string("undefined"));
  const int64_t B = x.dim(0), T = x.dim(1), D = x.dim(2);
  Tensor tx = checked(x, {B, T, D}, op, "x");
  Tensor tg = checked(g, {B, T, D}, op, "g");
  Tensor th0 = h0 ? checked(*h0, {B, D}, op, "h0") : Tensor();
  Tensor o = Tensor::empty({B, T, D});
  Tensor ht = final_state ? Tensor::empty({B, D}) : Tensor();
  ks::hgrn_fwd(tx.data<float>(), tg.data<float>(), ptr(th0), o.data<float>(), mptr(ht), B, T, D, form);
  const bool need_h0 = needs(h0);
  std::vector<Tensor> outs = {o};
  if (final_state) outs.push_back(ht);
  // The backward reads the states from the output o, so x itself is not kept.
  auto v = record(op, {x, g, h0 ? *h0 : Variable()}, outs, [=](const std::vector<Tensor>& gr) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty({B, T, D}), dg = Tensor::empty({B, T, D}), dh0 = empty_if(need_h0, {B, D});
    Tensor dout = gr[0].contiguous();
    Tensor dht = final_state ? gr[1].contiguous() : Tensor();
    ks::hgrn_bwd(tg.data<float>(), o.data<float>(), ptr(th0), dout.data<float>(), ptr(dht), dx.data<float>(),
                 dg.data<float>(), mptr(dh0), B, T, D, form);
    return {dx, dg, dh0};
  });
  ScanResult r;
  r.out = v[0];
  if (final_state) r.final_state = v[1];
  return r;
}

Tensor hgrn_step(const Tensor& x, const Tensor& g, Tensor& h) {
  const char* op = "hgrn_step";
  SW_CHECK(x.defined() && x.ndim() == 2, op, "x must be [B, D], got ",
           x.defined() ? x.describe() : std::string("undefined"));
  const int64_t B = x.dim(0), D = x.dim(1);
  Tensor tx = checked(x, {B, D}, op, "x"), tg = checked(g, {B, D}, op, "g");
  check_state(h, {B, D}, op, "state h");
  Tensor o = Tensor::empty({B, D});
  ks::hgrn_step(tx.data<float>(), tg.data<float>(), h.data<float>(), o.data<float>(), B, D);
  return o;
}

// ---- TTT-Linear ----------------------------------------------------------------------------------

TttLinearResult ttt_linear(const Variable& xq, const Variable& xk, const Variable& xv, const Variable& eta,
                           const Variable* token_eta, const Variable& ln_gamma, const Variable& ln_beta,
                           const Variable& W0, const Variable& b0, int64_t mini_batch, double eps, bool final_state) {
  const char* op = "ttt_linear";
  SW_CHECK(xq.defined() && xq.data().ndim() == 4, op, "xq must be [B, T, H, D], got ",
           xq.defined() ? xq.data().describe() : std::string("undefined"));
  SW_CHECK(mini_batch > 0 && eps > 0, op, "mini_batch and eps must be positive, got ", mini_batch, " and ", eps);
  const int64_t B = xq.dim(0), T = xq.dim(1), H = xq.dim(2), D = xq.dim(3);
  Tensor tq = checked(xq, {B, T, H, D}, op, "xq");
  Tensor tk = checked(xk, {B, T, H, D}, op, "xk");
  Tensor tv = checked(xv, {B, T, H, D}, op, "xv");
  Tensor teta = checked(eta, {B, T, H}, op, "eta");
  Tensor tte = token_eta ? checked(*token_eta, {mini_batch}, op, "token_eta") : Tensor();
  Tensor tgamma = checked(ln_gamma, {H, D}, op, "ln_gamma");
  Tensor tbeta = checked(ln_beta, {H, D}, op, "ln_beta");
  // The initial inner model is either the layer's parameter, shared by every sequence of the batch,
  // or a per-sequence state (prefill continuing from a state). The kernel takes one per sequence.
  SW_CHECK(W0.defined() && b0.defined(), op, "W0 and b0 must be defined");
  const bool shared = W0.data().ndim() == 3;
  Tensor tW0 = shared ? checked(W0, {H, D, D}, op, "W0 (shared)") : checked(W0, {B, H, D, D}, op, "W0");
  Tensor tb0 = shared ? checked(b0, {H, D}, op, "b0 (shared, with a shared W0)")
                      : checked(b0, {B, H, D}, op, "b0 (per sequence, with a per-sequence W0)");
  if (shared) {
    Tensor W = Tensor::empty({B, H, D, D}), bb = Tensor::empty({B, H, D});
    for (int64_t i = 0; i < B; ++i) {
      std::memcpy(W.data<float>() + i * H * D * D, tW0.data<float>(), H * D * D * sizeof(float));
      std::memcpy(bb.data<float>() + i * H * D, tb0.data<float>(), H * D * sizeof(float));
    }
    tW0 = W, tb0 = bb;
  }
  kernels::scan::TttLinearInputs in;
  in.xq = ptr(tq), in.xk = ptr(tk), in.xv = ptr(tv), in.eta = ptr(teta), in.token_eta = ptr(tte);
  in.ln_gamma = ptr(tgamma), in.ln_beta = ptr(tbeta), in.W0 = ptr(tW0), in.b0 = ptr(tb0);
  in.B = B, in.T = T, in.H = H, in.D = D, in.mini_batch = mini_batch, in.eps = static_cast<float>(eps);
  Tensor out = Tensor::empty({B, T, H, D});
  Tensor Wt = final_state ? Tensor::empty({B, H, D, D}) : Tensor();
  Tensor bt = final_state ? Tensor::empty({B, H, D}) : Tensor();
  ks::ttt_linear_fwd(in, out.data<float>(), mptr(Wt), mptr(bt));

  std::vector<Variable> inputs = {xq, xk, xv, eta, token_eta ? *token_eta : Variable(), ln_gamma, ln_beta, W0, b0};
  std::vector<bool> need(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) need[i] = inputs[i].defined() && inputs[i].requires_grad();
  std::vector<Tensor> outs = {out};
  if (final_state) outs.push_back(Wt), outs.push_back(bt);
  auto v = record(op, inputs, outs, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    kernels::scan::TttLinearInputs bin = in;
    bin.xq = ptr(tq), bin.xk = ptr(tk), bin.xv = ptr(tv), bin.eta = ptr(teta), bin.token_eta = ptr(tte);
    bin.ln_gamma = ptr(tgamma), bin.ln_beta = ptr(tbeta), bin.W0 = ptr(tW0), bin.b0 = ptr(tb0);
    Tensor dq = empty_if(need[0], {B, T, H, D}), dk = empty_if(need[1], {B, T, H, D});
    Tensor dv = empty_if(need[2], {B, T, H, D}), deta = empty_if(need[3], {B, T, H});
    Tensor dte = empty_if(need[4], {mini_batch}), dgamma = empty_if(need[5], {H, D}), dbeta = empty_if(need[6], {H, D});
    Tensor dW = empty_if(need[7], {B, H, D, D}), db = empty_if(need[8], {B, H, D});
    kernels::scan::TttLinearGrads gr;
    gr.dxq = mptr(dq), gr.dxk = mptr(dk), gr.dxv = mptr(dv), gr.deta = mptr(deta), gr.dtoken_eta = mptr(dte);
    gr.dln_gamma = mptr(dgamma), gr.dln_beta = mptr(dbeta), gr.dW0 = mptr(dW), gr.db0 = mptr(db);
    Tensor dout = g[0].contiguous();
    Tensor dWt = final_state ? g[1].contiguous() : Tensor(), dbt = final_state ? g[2].contiguous() : Tensor();
    kernels::scan::ttt_linear_bwd(bin, dout.data<float>(), ptr(dWt), ptr(dbt), gr);
    if (shared) {  // the parameter was broadcast over the batch: its gradient is the sum over sequences
      auto sum_over_batch = [B](const Tensor& t, const Shape& s) {
        if (!t.defined()) return t;
        Tensor r = Tensor::zeros(s);
        const int64_t n = r.numel();
        float* pr = r.data<float>();
        const float* pt = t.data<float>();
        for (int64_t i = 0; i < B; ++i)
          for (int64_t j = 0; j < n; ++j) pr[j] += pt[i * n + j];
        return r;
      };
      dW = sum_over_batch(dW, {H, D, D});
      db = sum_over_batch(db, {H, D});
    }
    return {dq, dk, dv, deta, dte, dgamma, dbeta, dW, db};
  });
  TttLinearResult r;
  r.out = v[0];
  if (final_state) r.W = v[1], r.b = v[2];
  return r;
}

Tensor ttt_linear_step(const Tensor& xq, const Tensor& xk, const Tensor& xv, const Tensor& eta, float token_eta,
                       const Tensor& ln_gamma, const Tensor& ln_beta, Tensor& W, Tensor& b, Tensor& W_grad,
                       Tensor& b_grad, bool closes_mini_batch, double eps) {
  const char* op = "ttt_linear_step";
  SW_CHECK(xq.defined() && xq.ndim() == 3, op, "xq must be [B, H, D], got ",
           xq.defined() ? xq.describe() : std::string("undefined"));
  const int64_t B = xq.dim(0), H = xq.dim(1), D = xq.dim(2);
  Tensor tq = checked(xq, {B, H, D}, op, "xq"), tk = checked(xk, {B, H, D}, op, "xk");
  Tensor tv = checked(xv, {B, H, D}, op, "xv"), teta = checked(eta, {B, H}, op, "eta");
  Tensor tgamma = checked(ln_gamma, {H, D}, op, "ln_gamma"), tbeta = checked(ln_beta, {H, D}, op, "ln_beta");
  check_state(W, {B, H, D, D}, op, "state W");
  check_state(b, {B, H, D}, op, "state b");
  check_state(W_grad, {B, H, D, D}, op, "state W_grad");
  check_state(b_grad, {B, H, D}, op, "state b_grad");
  Tensor out = Tensor::empty({B, H, D});
  kernels::scan::ttt_linear_step(tq.data<float>(), tk.data<float>(), tv.data<float>(), teta.data<float>(), token_eta,
                                 tgamma.data<float>(), tbeta.data<float>(), W.data<float>(), b.data<float>(),
                                 W_grad.data<float>(), b_grad.data<float>(), closes_mini_batch, out.data<float>(), B, H,
                                 D, static_cast<float>(eps));
  return out;
}

}  // namespace sw::ops
