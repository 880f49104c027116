#include "nn/attention/block_layout.h"

#include "core/error.h"

namespace sw::nn {

BuiltLayout build_layout(const SparsePattern& p, int64_t q_offset, int64_t Tq, int64_t Tk) {
  SW_CHECK(p.block > 0 && p.block <= 4096 && p.local >= 1 && p.global >= 0 && p.stride >= 0, "block_layout",
           "pattern needs block in 1..4096, local >= 1, global >= 0, stride >= 0");
  BuiltLayout L;
  const int64_t bq = q_offset % p.block == 0 ? p.block : 1;
  const int64_t rows = (Tq + bq - 1) / bq, kblocks = (Tk + p.block - 1) / p.block;
  SW_CHECK(rows * kblocks < (int64_t{1} << 31), "block_layout", "layout of ", rows, " x ", kblocks,
           " blocks is too large");
  L.row_ptr.reserve(static_cast<size_t>(rows + 1));
  L.row_ptr.push_back(0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t qb = (q_offset + r * bq) / p.block;
    for (int64_t kb = 0; kb <= qb && kb < kblocks; ++kb) {
      ++L.density_total;
      if (p.allows(qb, kb)) L.col_idx.push_back(static_cast<int32_t>(kb)), ++L.density_nnz;
    }
    L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
  }
  L.view.block_q = static_cast<int>(bq);
  L.view.block_k = static_cast<int>(p.block);
  L.view.n_layouts = 1;
  L.view.row_ptr = L.row_ptr.data();
  L.view.col_idx = L.col_idx.data();
  return L;
}

}  // namespace sw::nn
