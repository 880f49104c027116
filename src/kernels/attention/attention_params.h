// Shapes and options shared by every attention kernel (tiled prefill, decode, KIVI, Sage).
//
// Visibility of key j (absolute position j) to query i (absolute position pos_q = q_offset + i):
//   causal_ok = !causal || j <= pos_q
//   window_ok = window == 0 || (causal ? pos_q - j < window : |pos_q - j| < window)
//   visible   = causal_ok && (window_ok || j < n_sink) && block_allowed(i / block_q, j / block_k)
// The non-causal window is symmetric (Longformer-style local attention). Learned sink logits
// (gpt-oss) add exp(sink[h]) to the softmax denominator; they are not multiplied by scale and carry
// no value. A query that sees no key (and has no learned sink) outputs 0 and lse = kEmptyRowLse.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sw::kernels::attention {

// Finite stand-in for log(0): merges by log-sum-exp give such a part zero weight.
inline constexpr float kEmptyRowLse = -1e30f;

struct AttentionDims {
  int B = 1;    // batch
  int Tq = 0;   // query tokens
  int Tk = 0;   // key/value tokens
  int Hq = 1;   // query heads
  int Hkv = 1;  // key/value heads; Hq % Hkv == 0, query head h reads kv head h / (Hq / Hkv)
  int Dk = 0;   // query/key head dim
  int Dv = 0;   // value head dim
};

// Block-sparse layout: which (query block, key block) pairs are computed; absent pairs are skipped.
// CSR per layout: row r (query block r) lists its key blocks col_idx[row_ptr[r] .. row_ptr[r+1]),
// strictly increasing. Query blocks index rows of q (local index i), key blocks index keys j.
struct BlockLayout {
  int block_q = 0;                   // bq; 0 = no layout (dense)
  int block_k = 0;                   // bk
  int n_layouts = 1;                 // 1: shared; Hq: one per query head; B*Hq: one per (b, h)
  const int32_t* row_ptr = nullptr;  // [n_layouts, ceil(Tq / bq) + 1] offsets into col_idx
  const int32_t* col_idx = nullptr;  // [nnz] key-block indices
};

struct AttentionParams {
  float scale = 0.f;                    // logit scale; 0 means 1/sqrt(Dk)
  bool causal = true;                   // key visible only if its position <= the query's
  int64_t q_offset = 0;                 // absolute position of query row 0 (prefill with a cache)
  int64_t window = 0;                   // sliding window length; 0 = unlimited
  int64_t n_sink = 0;                   // StreamingLLM: keys 0..n_sink-1 bypass the window
  const float* sink_logits = nullptr;   // [Hq] learned per-head sink logits (gpt-oss); optional
  BlockLayout layout;                   // optional block-sparse layout
};

inline float effective_scale(const AttentionParams& p, int Dk) {
  return p.scale != 0.f ? p.scale : 1.f / std::sqrt(static_cast<float>(Dk));
}

// Keys visible to one query, ignoring the block layout: [0, sink_end) united with [lo, hi).
struct VisibleKeys {
  int64_t sink_end = 0, lo = 0, hi = 0;
};

inline VisibleKeys visible_keys(const AttentionParams& p, int64_t pos_q, int64_t Tk) {
  int64_t hi = Tk, lo = 0;
  if (p.causal) hi = std::min(hi, pos_q + 1);
  if (p.window > 0) {
    lo = std::max<int64_t>(0, pos_q - p.window + 1);
    if (!p.causal) hi = std::min(hi, pos_q + p.window);
  }
  VisibleKeys r;
  r.sink_end = std::clamp<int64_t>(std::min(p.n_sink, p.causal ? pos_q + 1 : Tk), 0, Tk);
  if (lo < hi) {
    r.lo = lo;
    r.hi = hi;
  }
  return r;
}

// Key-block list of query block qb for batch b, head h: [*begin, *end).
inline void layout_row(const BlockLayout& L, int n_qblocks, int B_index, int h, int Hq, int qb,
                       const int32_t** begin, const int32_t** end) {
  int which = L.n_layouts == 1 ? 0 : (L.n_layouts == Hq ? h : B_index * Hq + h);
  const int32_t* rp = L.row_ptr + static_cast<int64_t>(which) * (n_qblocks + 1);
  *begin = L.col_idx + rp[qb];
  *end = L.col_idx + rp[qb + 1];
}

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace sw::kernels::attention
