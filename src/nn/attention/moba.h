// MoBA, Mixture of Block Attention (Lu et al. 2025, arXiv 2502.13189; MoonshotAI/MoBA moba_naive.py):
// parameter-free gating of key blocks. Keys are cut into blocks of `block` tokens; mu_b is the mean
// key of block b (per key head). Query t (absolute position pos, in block c = pos / block) scores
// every complete earlier block b < c by gate_b = q_t . mu_b, and attends to
//   its own block c (always, causal inside it) plus the top (topk - 1) earlier blocks by gate
// (the current block counts toward topk, as the reference's +inf gate on it; fewer earlier blocks
// than topk - 1: all of them; equal gates: the lower block index first; a NaN gate ranks last).
// Gating granularity: per query token and per query head, as in the reference (each query has its
// own blocks; a GQA group's heads read the same mu of their key head but select separately).
// So the layout has one row per query token (block_q = 1), block_k = block, and one layout per
// (batch, query head): BlockLayout n_layouts = B * Hq. Selection is not differentiable; attention
// over the selected blocks is the tiled kernel with this layout (forward and backward).
// The rule only reads q_t and complete earlier blocks, so a decode step selects exactly as prefill.
#pragma once

#include <cstdint>

#include "nn/attention/block_layout.h"

namespace sw::nn {

struct MobaShape {
  int64_t B = 1, Tq = 0, Tk = 0, Hq = 1, Hkv = 1, D = 0;
  int64_t q_offset = 0;  // absolute position of query row 0; keys are positions 0..Tk-1
};

// q [B, Tq, Hq, D] and k [B, Tk, Hkv, D] f32 contiguous; queries at q_offset.. must have their
// keys: q_offset + Tq <= Tk. Returns the CSR (row t of layout b * Hq + h = key blocks of query t).
BuiltLayout moba_layout(const float* q, const float* k, const MobaShape& s, int64_t block, int64_t topk);

}  // namespace sw::nn
