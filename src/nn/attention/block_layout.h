// Static block-sparse attention patterns from a config, turned into the CSR layout the tiled kernel
// skips absent blocks by (kernels/attention/attention_params.h BlockLayout). Blocks are `block`
// tokens of absolute position; query block qb sees key block kb (causal: kb <= qb) when
//   qb - kb < local                          (the band: its own block and local - 1 before it)
//   or kb < global                           (leading blocks every query sees: global tokens)
//   or stride > 0 and (qb - kb) % stride == 0  (Sparse Transformer's strided blocks)
// The sparse-attention work builds richer patterns on the same two functions.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/attention/attention_params.h"

namespace sw::nn {

struct SparsePattern {
  int64_t block = 0;  // 0: dense (no layout)
  int64_t local = 1;
  int64_t global = 0;
  int64_t stride = 0;
  bool active() const { return block > 0; }
  bool allows(int64_t qb, int64_t kb) const {
    if (kb > qb) return false;
    return qb - kb < local || kb < global || (stride > 0 && (qb - kb) % stride == 0);
  }
};

// The CSR arrays and a kernel view of them. Query rows are the Tq tokens at absolute positions
// q_offset.., keys the Tk tokens from position 0. Rows are whole blocks when q_offset is a multiple
// of the block, else single tokens (decode), so every row maps to one query block.
struct BuiltLayout {
  std::vector<int32_t> row_ptr, col_idx;
  kernels::attention::BlockLayout view;
  int64_t density_nnz = 0, density_total = 0;  // computed / causal-dense block pairs
};

BuiltLayout build_layout(const SparsePattern& p, int64_t q_offset, int64_t Tq, int64_t Tk);

}  // namespace sw::nn
