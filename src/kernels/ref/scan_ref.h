// f64 references for the scan kernels (kernels/scan), written straight from the papers' equations
// with plain loops. They are the spec the fp32 kernels are tested against; keep them obviously right,
// not fast. Layouts match the kernels.
#pragma once

#include <cstdint>

namespace sw::kernels::ref {

// ---- Mamba1 selective scan (mamba_ssm selective_scan_ref) -------------------------------------
//   dt = softplus(delta + delta_bias) (torch threshold 20) or delta + delta_bias
//   h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] Bm_t[n] u_t[d]
//   out_t[d] = (sum_n Cm_t[n] h_t[d, n] + Dskip[d] u_t[d]) * silu(z_t[d])
struct SelectiveScanRefInputs {
  const double* u = nullptr;           // [B, T, D]
  const double* delta = nullptr;       // [B, T, D]
  const double* A = nullptr;           // [D, N]
  const double* Bm = nullptr;          // [B, T, N]
  const double* Cm = nullptr;          // [B, T, N]
  const double* Dskip = nullptr;       // [D] or nullptr
  const double* z = nullptr;           // [B, T, D] or nullptr
  const double* delta_bias = nullptr;  // [D] or nullptr
  const double* h0 = nullptr;          // [B, D, N] or nullptr
  bool delta_softplus = false;
  int64_t B = 0, T = 0, D = 0, N = 0;
};

void selective_scan_ref_fwd(const SelectiveScanRefInputs& in,
                            double* out,  // [B, T, D]
                            double* ht);  // [B, D, N] or nullptr

// Backpropagation through time over all stored states. Every output pointer may be nullptr.
void selective_scan_ref_bwd(const SelectiveScanRefInputs& in,
                            const double* dout,  // [B, T, D]
                            const double* dht,   // [B, D, N] or nullptr
                            double* du,          // [B, T, D]
                            double* ddelta,      // [B, T, D]
                            double* dA,          // [D, N]
                            double* dBm,         // [B, T, N]
                            double* dCm,         // [B, T, N]
                            double* dDskip,      // [D]
                            double* dz,          // [B, T, D]
                            double* ddelta_bias, // [D]
                            double* dh0);        // [B, D, N]

// ---- HGRN element-wise linear recurrence -----------------------------------------------------
//   h_t = exp(g_t) * h_{t-1} + x_t,  o_t = h_t   over [B, T, D]
void hgrn_ref_fwd(const double* x,   // [B, T, D]
                  const double* g,   // [B, T, D] log forget gate
                  const double* h0,  // [B, D] or nullptr
                  double* o,         // [B, T, D]
                  double* ht,        // [B, D] or nullptr
                  int64_t B, int64_t T, int64_t D);

void hgrn_ref_bwd(const double* x,    // [B, T, D]
                  const double* g,    // [B, T, D]
                  const double* h0,   // [B, D] or nullptr
                  const double* do_,  // [B, T, D]
                  const double* dht,  // [B, D] or nullptr
                  double* dx,         // [B, T, D]
                  double* dg,         // [B, T, D]
                  double* dh0,        // [B, D] or nullptr
                  int64_t B, int64_t T, int64_t D);

// ---- TTT-Linear, primal form (Sun et al. 2024, ttt-lm-pytorch TTTLinear) ---------------------
// Per (batch, head), tokens in mini-batches of mb (the last may be shorter); with W, b the inner
// model at the start of the mini-batch and i, j positions inside it:
//   G_j   = d/dz [ 0.5 || LN(z) - (xv_j - xk_j) ||^2 ] at z = xk_j W + b     (LN: gamma, beta, eps)
//   eta_ij = token_eta[i] * eta_j
//   W_i   = W - sum_{j<=i} eta_ij xk_j^T G_j,  b_i = b - sum_{j<=i} eta_ij G_j
//   out_i = xq_i + LN(xq_i W_i + b_i)
//   the next mini-batch starts from W_{m-1}, b_{m-1} (m = its length); those after the last one are
//   the final state.
struct TttLinearRefInputs {
  const double* xq = nullptr;         // [B, T, H, D]
  const double* xk = nullptr;         // [B, T, H, D]
  const double* xv = nullptr;         // [B, T, H, D]
  const double* eta = nullptr;        // [B, T, H]
  const double* token_eta = nullptr;  // [mini_batch] or nullptr (1 / (i + 1))
  const double* ln_gamma = nullptr;   // [H, D]
  const double* ln_beta = nullptr;    // [H, D]
  const double* W0 = nullptr;         // [B, H, D, D]
  const double* b0 = nullptr;         // [B, H, D]
  int64_t B = 0, T = 0, H = 0, D = 0, mini_batch = 16;
  double eps = 1e-6;
};

void ttt_linear_ref_fwd(const TttLinearRefInputs& in,
                        double* out,    // [B, T, H, D]
                        double* W_out,  // [B, H, D, D] or nullptr
                        double* b_out); // [B, H, D] or nullptr

}  // namespace sw::kernels::ref
