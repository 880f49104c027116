// Mamba1 selective scan (Gu & Dao 2023), forward, backward and single-token decode step.
//
// Per batch b, channel d and state n (fp32 throughout):
//   dt_t    = softplus(delta_t + delta_bias)   if delta_softplus, else delta_t + delta_bias
//   h_t[n]  = exp(dt_t * A[d, n]) * h_{t-1}[n] + dt_t * Bm_t[n] * u_t
//   y_t     = sum_n Cm_t[n] * h_t[n] + Dskip[d] * u_t
//   out_t   = y_t * silu(z_t)                  if z is given
// Reference: mamba_ssm selective_scan_ref (real A, input-dependent B and C of shape [B, N, L],
// shared by all channels); softplus uses torch's threshold (x > 20 returns x). f64 version:
// kernels/ref/scan_ref.h. Layout is sequence-major: u, delta, z, out [B, T, D]; Bm, Cm [B, T, N];
// the state [B, D, N]. The parallel form (ScanForm::blelloch) runs a work-efficient scan over chunks
// of T; both forms parallelise over (batch, block of 16 channels) and vectorise over channels.
//
// The backward keeps O(chunk) memory per work item rather than a [D, N] state per token: it recomputes
// the forward once to store the state at every chunk boundary (chunks of 64 tokens, fewer for large N
// so that a chunk's buffers stay in L2), then walks the chunks in reverse, recomputing each chunk's
// states from its boundary. The Blelloch form does both passes with scans (the reverse one runs
// g_t = exp(dt_{t+1} A) g_{t+1} + Cm_t dy_t backwards in time). Bm/Cm gradients are summed over channel
// blocks in per-thread buffers reduced in a fixed order, so results do not depend on scheduling.
#pragma once

#include <cstdint>

#include "kernels/scan/scan_form.h"

namespace sw::kernels::scan {

struct SelectiveScanInputs {
  const float* u = nullptr;           // [B, T, D]
  const float* delta = nullptr;       // [B, T, D] (before delta_bias and softplus)
  const float* A = nullptr;           // [D, N] (negative; the layer stores A_log, A = -exp(A_log))
  const float* Bm = nullptr;          // [B, T, N]
  const float* Cm = nullptr;          // [B, T, N]
  const float* Dskip = nullptr;       // [D] or nullptr (no skip term)
  const float* z = nullptr;           // [B, T, D] or nullptr (no gate)
  const float* delta_bias = nullptr;  // [D] or nullptr (no bias)
  const float* h0 = nullptr;          // [B, D, N] or nullptr (zero initial state)
  bool delta_softplus = false;
  int64_t B = 0, T = 0, D = 0, N = 0;
};

// Gradient outputs, overwritten. A pointer may be nullptr when its gradient is not wanted. dz must be
// nullptr without a gate; dDskip, ddelta_bias and dh0 without their input are the gradients w.r.t. a
// zero skip, bias or initial state.
struct SelectiveScanGrads {
  float* du = nullptr;           // [B, T, D]
  float* ddelta = nullptr;       // [B, T, D] (w.r.t. the raw delta input)
  float* dA = nullptr;           // [D, N]
  float* dBm = nullptr;          // [B, T, N]
  float* dCm = nullptr;          // [B, T, N]
  float* dDskip = nullptr;       // [D]
  float* dz = nullptr;           // [B, T, D]
  float* ddelta_bias = nullptr;  // [D]
  float* dh0 = nullptr;          // [B, D, N]
};

// out: [B, T, D]; ht: [B, D, N] final state, or nullptr.
void selective_scan_fwd(const SelectiveScanInputs& in, float* out, float* ht,
                        ScanForm form = ScanForm::sequential);

// dout: [B, T, D]; dht: [B, D, N] gradient arriving at the final state, or nullptr (zero).
void selective_scan_bwd(const SelectiveScanInputs& in, const float* dout, const float* dht,
                        const SelectiveScanGrads& grads, ScanForm form = ScanForm::sequential);

// One decode token: the T == 1 case of the forward with the state updated in place.
void selective_scan_step(const float* u,           // [B, D]
                         const float* delta,       // [B, D]
                         const float* A,           // [D, N]
                         const float* Bm,          // [B, N]
                         const float* Cm,          // [B, N]
                         const float* Dskip,       // [D] or nullptr
                         const float* z,           // [B, D] or nullptr
                         const float* delta_bias,  // [D] or nullptr
                         bool delta_softplus,
                         float* h,                 // [B, D, N] state, read and overwritten
                         float* out,               // [B, D]
                         int64_t B, int64_t D, int64_t N);

}  // namespace sw::kernels::scan
