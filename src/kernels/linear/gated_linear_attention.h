// Gated linear attention: one kernel family for every linear-attention variant whose state decays
// diagonally (linear attention, RetNet, Lightning, simple GLA / Mamba2 SSD, GLA, HGRN2, RWKV-6).
//
// Per batch b and head h, with state S [K, V] (rows are key channels) and q' = scale * q:
//   standard read-out (u == nullptr; fla linear_attn / simple_gla / gla, research/fla.md 2.1-2.3):
//     S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,      o_t = S_t^T q'_t
//   RWKV-6 read-out (u != nullptr; fla rwkv6 naive_recurrent_rwkv6, fla.md 2.7): read BEFORE decay,
//   plus a bonus for the current token:
//     o_t = S_{t-1}^T q'_t + (q'_t . (u ⊙ k_t)) v_t,  S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T
// The log-decay g (<= 0) comes in four shapes (GlaGate). HGRN2 is the per-channel mode with
// k = 1 - exp(g); Mamba2 SSD is the scalar mode with q = C, k = B, v = dt * x, scale 1 (state
// transposed w.r.t. mamba's [P, N]). Feature maps, normalisers (append a ones column to v: V is
// any size), projections and gates' parametrisation are the layer's job.
//
// Forms: recurrent (token loop; decode), a single-token in-place step (generation) and chunkwise
// parallel (training, prefill), each with a backward. The f64 reference that defines the semantics
// is kernels/ref/gated_linear_attention_ref.h.
//
// Layout: activations [B, T, H, D] row-major contiguous, states [B, H, K, V], all fp32. Outputs
// must not alias inputs (gla_step's state is the one in/out buffer).
// Threads: OpenMP over (batch, head) work items; call from outside any parallel region.
// Scratch: thread-local slots 0 and 1 (work tiles, recomputed chunk states) and, on the calling
// thread, slot 2 (cross-batch reduction of du / the per-head constant dg).
// Speed (Zen5, one core, K = V = 64, in cache): recurrent forward ~140 ns per token and head in
// every gate mode; chunk forward ~190 ns (scalar / no gate) and ~265 ns (per-channel) at
// chunk_size 32, so on this CPU the recurrent form is the faster prefill when no chunk states are
// needed; the chunk backward is 1.3-2x faster than the recurrent one and is the training path.
#pragma once

#include <cstdint>

namespace sw::kernels {

// How the log-decay g is given. Decay factor is exp(g), g <= 0 (positive g is computed as well,
// but only stays finite while the growth it implies fits fp32).
enum class GlaGate {
  kNone,       // g unused (nullptr): plain linear attention, decay 1
  kHeadConst,  // g: [H], one constant per head (RetNet log(gamma_h), Lightning)
  kScalar,     // g: [B, T, H], data-dependent, one per head and token (Mamba2, simple GLA)
  kChannel,    // g: [B, T, H, K], one per key channel (GLA, HGRN2, RWKV-6 w)
};

struct GlaDims {
  int64_t batch;      // B
  int64_t seq_len;    // T (>= 0)
  int64_t heads;      // H
  int64_t key_dim;    // K
  int64_t value_dim;  // V
};

// Number of chunks of size chunk_size covering seq_len tokens (the NT of chunk_states).
inline int64_t gla_num_chunks(int64_t seq_len, int64_t chunk_size) {
  return (seq_len + chunk_size - 1) / chunk_size;
}

// ---------------------------------------------------------------------------------------------
// Recurrent form: token by token, O(T K V) work, no extra memory. Decode path and oracle.
void gla_forward_recurrent(const GlaDims& dims, GlaGate gate, float scale,
                           const float* q,   // [B, T, H, K]
                           const float* k,   // [B, T, H, K]
                           const float* v,   // [B, T, H, V]
                           const float* g,   // nullptr | [H] | [B, T, H] | [B, T, H, K] (by gate)
                           const float* u,   // [H, K] RWKV-6 bonus, or nullptr (standard read-out)
                           const float* h0,  // [B, H, K, V] initial state, or nullptr (zeros)
                           float* o,         // [B, T, H, V] out
                           float* ht);       // [B, H, K, V] final state out, or nullptr

// One token for every (batch, head): state updated in place (generation). Same semantics as
// gla_forward_recurrent with T = 1, h0 = ht = state. g: nullptr | [H] | [B, H] | [B, H, K].
void gla_step(int64_t batch, int64_t heads, int64_t key_dim, int64_t value_dim, GlaGate gate,
              float scale,
              const float* q,  // [B, H, K]
              const float* k,  // [B, H, K]
              const float* v,  // [B, H, V]
              const float* g,  // nullptr | [H] | [B, H] | [B, H, K]
              const float* u,  // [H, K] or nullptr
              float* state,    // [B, H, K, V] in/out
              float* o);       // [B, H, V] out

// Backward of the recurrent form (BPTT without per-token states: states are recomputed forward,
// then dS runs in reverse; dg by the reverse-cumsum identity of fla.md 2.11). Writes every
// gradient it is given; nullptr outputs are skipped where noted.
//   dg: [B, T, H] (kScalar), [B, T, H, K] (kChannel), [H] (kHeadConst: sum over b, t; nullptr
//       skips it), unused for kNone.   du: [H, K], required when u is given.   dh0: nullptr skips.
void gla_backward_recurrent(const GlaDims& dims, GlaGate gate, float scale,
                            const float* q,     // [B, T, H, K]
                            const float* k,     // [B, T, H, K]
                            const float* v,     // [B, T, H, V]
                            const float* g,     // as in forward
                            const float* u,     // [H, K] or nullptr
                            const float* h0,    // [B, H, K, V] or nullptr
                            const float* dout,  // [B, T, H, V] gradient of o
                            const float* dht,   // [B, H, K, V] grad of the final state, or nullptr
                            float* dq,          // [B, T, H, K]
                            float* dk,          // [B, T, H, K]
                            float* dv,          // [B, T, H, V]
                            float* dg,          // see above
                            float* du,          // [H, K] or nullptr when u == nullptr
                            float* dh0);        // [B, H, K, V] or nullptr

// ---------------------------------------------------------------------------------------------
// Chunkwise-parallel form (fla chunk / Mamba2 SSD): chunks of chunk_size tokens (any value >= 1;
// 16..128 is the useful range, 32-64 fastest on CPU); T need not be a multiple. Intra-chunk decays are
// only ever exp of non-positive differences of chunk-local cumulative gates, so any decay strength
// is safe. chunk_states, if given, receives the state entering each chunk (chunk_states[.., 0, ..]
// == h0) for the backward: [B, H, NT, K, V] with NT = gla_num_chunks(T, chunk_size).
void gla_forward_chunk(const GlaDims& dims, GlaGate gate, float scale, int64_t chunk_size,
                       const float* q,     // [B, T, H, K]
                       const float* k,     // [B, T, H, K]
                       const float* v,     // [B, T, H, V]
                       const float* g,     // nullptr | [H] | [B, T, H] | [B, T, H, K]
                       const float* u,     // [H, K] or nullptr
                       const float* h0,    // [B, H, K, V] or nullptr
                       float* o,           // [B, T, H, V] out
                       float* ht,          // [B, H, K, V] out, or nullptr
                       float* chunk_states);  // [B, H, NT, K, V] out, or nullptr

// Backward of the chunk form, chunk by chunk in reverse carrying dS. chunk_states from the forward
// (same chunk_size) or nullptr to recompute them (one cheap state-only pass per (b, h)). Outputs as
// in gla_backward_recurrent.
void gla_backward_chunk(const GlaDims& dims, GlaGate gate, float scale, int64_t chunk_size,
                        const float* q,             // [B, T, H, K]
                        const float* k,             // [B, T, H, K]
                        const float* v,             // [B, T, H, V]
                        const float* g,             // as in forward
                        const float* u,             // [H, K] or nullptr
                        const float* h0,            // [B, H, K, V] or nullptr
                        const float* chunk_states,  // [B, H, NT, K, V] or nullptr
                        const float* dout,          // [B, T, H, V]
                        const float* dht,           // [B, H, K, V] or nullptr
                        float* dq,                  // [B, T, H, K]
                        float* dk,                  // [B, T, H, K]
                        float* dv,                  // [B, T, H, V]
                        float* dg,                  // see gla_backward_recurrent
                        float* du,                  // [H, K] or nullptr when u == nullptr
                        float* dh0);                // [B, H, K, V] or nullptr

}  // namespace sw::kernels
