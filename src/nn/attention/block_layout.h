// Static block-sparse attention patterns from a config, turned into the CSR layout the tiled kernel
// skips absent blocks by (kernels/attention/attention_params.h BlockLayout). Blocks are `block`
// tokens of absolute position; every pattern is causal (key block kb <= query block qb; inside the
// diagonal block the kernel's token-level causal mask applies). Query block qb sees key block kb when:
//   blocks      qb - kb < local || kb < global || (stride > 0 && (qb - kb) % stride == 0)
//               (the band, leading global blocks, Sparse Transformer's strided blocks: the union)
//   longformer  qb - kb < local || kb < global || qb < global
//               (causal sliding window + global tokens that see all and are seen by all; Beltagy et al.)
//   bigbird     qb - kb < local || kb < global || kb in R(layer, head, qb)
//               (window + global + `random` key blocks per query block drawn among the others, from a
//               hash of (seed, layer, head, qb): fixed per layer and head, the same at every length,
//               so prefill and decode agree; Zaheer et al. ITC)
//   dilated     some level i: qb / segments[i] == kb / segments[i] && (qb - kb) % dilations[i] == 0
//               (LongNet: segments of segments[i] blocks, inside which every dilations[i]-th block
//               back is kept, counted from the query's own block; the levels' union in one softmax)
//   strided     qb - kb < stride || (qb - kb) % stride == 0
//               (Sparse Transformer "strided": the previous l = stride blocks, then every l-th)
//   fixed       qb / stride == kb / stride || kb % stride >= stride - summary
//               (Sparse Transformer "fixed": the own group of l = stride blocks, plus the last
//               `summary` blocks of every group as summary columns)
// Layout granularity is the block both ways (the kernel skips whole blocks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/attention/attention_params.h"

namespace sw::nn {

enum class PatternKind { blocks, longformer, bigbird, dilated, strided, fixed };

// Parses a pattern name (blocks | longformer | bigbird | dilated | strided | fixed); throws naming
// `where` and the valid names otherwise.
PatternKind pattern_kind(const std::string& name, const std::string& where);

// "4,16" -> {4, 16}: a comma-separated list of positive integers <= 2^24 (at most 16 entries);
// throws naming `where` otherwise. An empty string gives an empty list.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& where);

struct SparsePattern {
  int64_t block = 0;  // 0: dense (no layout)
  int64_t local = 1;
  int64_t global = 0;
  int64_t stride = 0;
  PatternKind kind = PatternKind::blocks;
  int64_t random = 0;   // bigbird: random key blocks per query block
  int64_t summary = 1;  // fixed: summary blocks at the end of every group
  uint64_t seed = 0;    // bigbird: random table seed (the layer index mixed in by the caller)
  std::vector<int64_t> segments, dilations;  // dilated: segment lengths and rates, in blocks

  SparsePattern(int64_t block_ = 0, int64_t local_ = 1, int64_t global_ = 0, int64_t stride_ = 0)
      : block(block_), local(local_), global(global_), stride(stride_) {}

  bool active() const { return block > 0; }
  // One layout per query head (the random blocks differ by head) instead of one shared.
  bool per_head() const { return kind == PatternKind::bigbird && random > 0; }
  // The pattern's fixed part (everything but bigbird's random blocks).
  bool allows_fixed(int64_t qb, int64_t kb) const;
  // BigBird's random key blocks of query block qb for `head`, increasing; empty for other kinds.
  std::vector<int64_t> random_blocks(int64_t qb, int64_t head) const;
  // Throws (naming `where` and the field) when a field is out of range for the kind.
  void validate(const std::string& where) const;
};

// The CSR arrays and a kernel view of them. Query rows are the Tq tokens at absolute positions
// q_offset.., keys the Tk tokens from position 0. Rows are whole blocks when q_offset is a multiple
// of the block, else single tokens (decode), so every row maps to one query block. A per-head
// pattern gets n_heads layouts (one per query head), others one shared.
struct BuiltLayout {
  std::vector<int32_t> row_ptr, col_idx;
  kernels::attention::BlockLayout view;
  int64_t density_nnz = 0, density_total = 0;  // computed / causal-dense block pairs
  void finish_view(int block_q, int block_k, int n_layouts);  // points view at the arrays
};

BuiltLayout build_layout(const SparsePattern& p, int64_t q_offset, int64_t Tq, int64_t Tk, int64_t n_heads = 1);

}  // namespace sw::nn
