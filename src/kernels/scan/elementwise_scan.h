// Element-wise gated linear recurrence (the HGRN op, fla `hgrn`), forward, backward and decode step.
//
//   h_t = exp(g_t) * h_{t-1} + x_t,   o_t = h_t          over x, g, o: [B, T, D], state [B, D]
//
// g is the log forget gate (g <= 0; the layer computes it, e.g. logsigmoid with a lower bound, and
// folds (1 - exp(g)) into x). Reference: fla.ops.hgrn naive_recurrent_hgrn; f64 version in
// kernels/ref/scan_ref.h. Work items are (batch, block of 64 channels); ScanForm::blelloch scans
// blocks of T with the work-efficient up-sweep/down-sweep, chunks chained by their state.
// The backward reads the forward output o (= the states) instead of recomputing them:
//   dh_t = do_t + exp(g_{t+1}) dh_{t+1} (dh_{T-1} gets dht too),  dx_t = dh_t,
//   dg_t = dh_t * exp(g_t) * h_{t-1},  dh0 = exp(g_0) dh_0.
#pragma once

#include <cstdint>

#include "kernels/scan/scan_form.h"

namespace sw::kernels::scan {

void hgrn_fwd(const float* x,   // [B, T, D]
              const float* g,   // [B, T, D] log forget gate
              const float* h0,  // [B, D] or nullptr (zeros)
              float* o,         // [B, T, D]
              float* ht,        // [B, D] final state, or nullptr
              int64_t B, int64_t T, int64_t D, ScanForm form = ScanForm::sequential);

// Writes dx, dg (and dh0 when not nullptr).
void hgrn_bwd(const float* g,    // [B, T, D]
              const float* o,    // [B, T, D] forward output
              const float* h0,   // [B, D] or nullptr
              const float* do_,  // [B, T, D]
              const float* dht,  // [B, D] or nullptr
              float* dx,         // [B, T, D]
              float* dg,         // [B, T, D]
              float* dh0,        // [B, D] or nullptr
              int64_t B, int64_t T, int64_t D, ScanForm form = ScanForm::sequential);

// One decode token: h = exp(g) * h + x; o = h.
void hgrn_step(const float* x,  // [B, D]
               const float* g,  // [B, D]
               float* h,        // [B, D] state, read and overwritten
               float* o,        // [B, D]
               int64_t B, int64_t D);

}  // namespace sw::kernels::scan
