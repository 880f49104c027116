// Dropless mixture-of-experts dispatch (survey section 5; MegaBlocks' dMoE without the padding):
// the (token, slot) assignments are sorted by expert with a stable counting sort, the token rows are
// gathered into one contiguous run per expert, each expert's SwiGLU runs as dense GEMMs over its
// run, and the outputs are combined back per token, weighted by the gates.
//
// Notation: N tokens, k assignment slots per token (assignment a = n * k + j), E experts, S <= N * k
// dispatched slots (an assignment whose expert is -1 is not dispatched: dropped by capacity, or
// routed to a parameter-free MoE++ expert handled elsewhere), D model width, H expert width.
// Expert weights are stored like nn::Linear, [out, in] per expert: gate/up [E, H, D], down [E, D, H].
//
// The combine is written as a per-token gather (y[n] reads its k slots), so it parallelises over
// tokens without atomics and is deterministic; the same holds for every backward here.
// No allocation: callers pass every buffer.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace sw::kernels {

// Stable counting sort of the assignments by expert. Returns S = offsets[E].
//   expert       [A] i32, A = N * k: expert of assignment a, or -1 (not dispatched)
//   offsets      [E + 1] out: expert e owns slots [offsets[e], offsets[e + 1])
//   slot_assign  [A] out: slot s -> assignment a (entries [0, S) are valid); within an expert, slots
//                are in assignment order, so the plan is deterministic
//   assign_slot  [A] out: assignment a -> slot, or -1 when a is not dispatched
int64_t moe_build_plan(const int32_t* expert, int64_t A, int64_t E, int64_t* offsets, int32_t* slot_assign,
                       int32_t* assign_slot);

// xs[s, :] = x[slot_assign[s] / k, :].
//   x [N, D], slot_assign [S], xs [S, D] out
void moe_gather(const float* x, const int32_t* slot_assign, int64_t S, int64_t k, int64_t D, float* xs);

// y[n, :] = sum_j gates[n, j] * ys[assign_slot[n * k + j], :], undispatched slots skipped.
//   ys [S, D], assign_slot [N * k], gates [N, k] (null: every gate 1), y [N, D] out (overwritten)
void moe_combine(const float* ys, const int32_t* assign_slot, const float* gates, int64_t N, int64_t k, int64_t D,
                 float* y);

// Backward of moe_combine.
//   dy [N, D], ys [S, D], assign_slot [N * k], gates [N, k]
//   dys [S, D] out: gates[a] * dy[n]
//   dgates [N, k] out: <dy[n], ys[slot]> (0 for undispatched slots); may be null
void moe_combine_backward(const float* dy, const float* ys, const int32_t* assign_slot, const float* gates, int64_t N,
                          int64_t k, int64_t D, float* dys, float* dgates);

// Backward of moe_gather: dx[n, :] = sum_j dxs[assign_slot[n * k + j], :] (0 for tokens with none).
//   dxs [S, D], assign_slot [N * k], dx [N, D] out (overwritten)
void moe_gather_backward(const float* dxs, const int32_t* assign_slot, int64_t N, int64_t k, int64_t D, float* dx);

// The experts' weights as the grouped GEMMs read them: gate/up [E, H, D], down [E, D, H], f32 or
// bf16 (inference; GEMMs accumulate in f32).
struct MoeExpertWeights {
  const void* gate = nullptr;
  const void* up = nullptr;
  const void* down = nullptr;
  DType dtype = DType::f32;
  int64_t E = 0, H = 0, D = 0;
};

// How the experts' GEMMs are scheduled: one after another (each GEMM uses every thread), or, when
// the runs are short, several experts at once (each GEMM on one thread). kAuto picks by run length.
enum class MoeSchedule { kAuto, kSequential, kParallel };

// Grouped SwiGLU forward over the runs of the plan: for each expert e with tokens,
//   hg = xs_e Wg_e^T, hu = xs_e Wu_e^T, act = silu(hg) * hu, ys_e = act Wd_e^T.
// Only experts with tokens are touched (decode reads only the selected experts' weights).
//   xs [S, D], offsets [E + 1]; hg, hu, act [S, H] out (kept for the backward); ys [S, D] out
void moe_swiglu_experts_fwd(const float* xs, const int64_t* offsets, const MoeExpertWeights& w, float* hg, float* hu,
                            float* act, float* ys, MoeSchedule sched = MoeSchedule::kAuto);

// Backward of moe_swiglu_experts_fwd (f32 weights).
//   dys [S, D]; dxs [S, D] out; dwg, dwu [E, H, D] and dwd [E, D, H] out (experts without tokens
//   get zero); dact, dhg, dhu [S, H] scratch. Any of dxs / the weight gradients may be null.
void moe_swiglu_experts_bwd(const float* xs, const int64_t* offsets, const MoeExpertWeights& w, const float* hg,
                            const float* hu, const float* act, const float* dys, float* dxs, float* dwg, float* dwu,
                            float* dwd, float* dact, float* dhg, float* dhu, MoeSchedule sched = MoeSchedule::kAuto);

}  // namespace sw::kernels
