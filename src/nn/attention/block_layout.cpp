#include "nn/attention/block_layout.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/hash.h"

namespace sw::nn {

namespace {

constexpr int64_t kMaxListValue = int64_t{1} << 24;

}  // namespace

PatternKind pattern_kind(const std::string& name, const std::string& where) {
  if (name == "blocks") return PatternKind::blocks;
  if (name == "longformer") return PatternKind::longformer;
  if (name == "bigbird") return PatternKind::bigbird;
  if (name == "dilated") return PatternKind::dilated;
  if (name == "strided") return PatternKind::strided;
  if (name == "fixed") return PatternKind::fixed;
  throw Error(str_cat("[attention] ", where, ".sparse_pattern: expected blocks, longformer, bigbird, dilated, ",
                      "strided or fixed, got '", name.substr(0, 64), "'"));
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& where) {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string item = text.substr(i, j - i);
    bool ok = !item.empty() && item.size() <= 9 && std::all_of(item.begin(), item.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    const int64_t v = ok ? std::stoll(item) : 0;
    ok = ok && v >= 1 && v <= kMaxListValue;
    SW_CHECK(ok, "attention", where, ": expected a comma-separated list of integers in [1, 2^24], got '",
             text.substr(0, 64), "'");
    out.push_back(v);
    SW_CHECK(out.size() <= 16, "attention", where, ": at most 16 entries, got more in '", text.substr(0, 64), "'");
    i = j + 1;
    if (j + 1 == text.size()) SW_CHECK(false, "attention", where, ": trailing comma in '", text.substr(0, 64), "'");
  }
  return out;
}

bool SparsePattern::allows_fixed(int64_t qb, int64_t kb) const {
  if (kb > qb || kb < 0) return false;
  const int64_t back = qb - kb;
  switch (kind) {
    case PatternKind::blocks:
      return back < local || kb < global || (stride > 0 && back % stride == 0);
    case PatternKind::longformer:
      return back < local || kb < global || qb < global;
    case PatternKind::bigbird:
      return back < local || kb < global;
    case PatternKind::dilated:
      for (size_t i = 0; i < segments.size(); ++i)
        if (qb / segments[i] == kb / segments[i] && back % dilations[i] == 0) return true;
      return false;
    case PatternKind::strided:
      return back < stride || back % stride == 0;
    case PatternKind::fixed:
      return qb / stride == kb / stride || kb % stride >= stride - summary;
  }
  return false;
}

// The candidates are the key blocks [global, qb - local] that the window and global part leave out;
// r of them (all when fewer) by Floyd's sampling from a generator seeded by (seed, head, qb).
std::vector<int64_t> SparsePattern::random_blocks(int64_t qb, int64_t head) const {
  std::vector<int64_t> out;
  if (kind != PatternKind::bigbird || random <= 0) return out;
  const int64_t lo = global, hi = qb - local;  // inclusive range
  if (hi < lo) return out;
  const int64_t n = hi - lo + 1;
  if (n <= random) {
    for (int64_t kb = lo; kb <= hi; ++kb) out.push_back(kb);
    return out;
  }
  uint64_t state = splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(head)) ^ static_cast<uint64_t>(qb));
  std::set<int64_t> picked;
  for (int64_t j = n - random; j < n; ++j) {
    state = splitmix64(state);
    const int64_t t = static_cast<int64_t>(state % static_cast<uint64_t>(j + 1));
    picked.insert(picked.count(t) ? j : t);
  }
  for (int64_t t : picked) out.push_back(lo + t);
  return out;
}

void SparsePattern::validate(const std::string& where) const {
  auto need = [&](bool ok, const char* field, const std::string& what, int64_t got) {
    SW_CHECK(ok, "attention", where, ".", field, ": expected ", what, ", got ", got);
  };
  need(block >= 1 && block <= 4096, "sparse_block", "1..4096 (tokens per block)", block);
  need(local >= 1, "sparse_local", ">= 1 (key blocks of the band, the own one included)", local);
  need(global >= 0, "sparse_global", ">= 0", global);
  need(stride >= 0, "sparse_stride", ">= 0", stride);
  need(random >= 0, "sparse_random", ">= 0", random);
  if (kind == PatternKind::strided || kind == PatternKind::fixed)
    need(stride >= 1, "sparse_stride", std::string(">= 1 for sparse_pattern ") +
                                           (kind == PatternKind::strided ? "strided" : "fixed") +
                                           " (the period l in blocks)",
         stride);
  if (kind == PatternKind::fixed)
    need(summary >= 1 && summary <= stride, "sparse_summary", "1..sparse_stride (" + std::to_string(stride) + ")",
         summary);
  if (kind == PatternKind::dilated) {
    SW_CHECK(!segments.empty() && segments.size() == dilations.size(), "attention", where,
             ".sparse_segments / sparse_dilations: sparse_pattern dilated needs lists of equal, non-zero length, got ",
             segments.size(), " segments and ", dilations.size(), " dilations");
    for (size_t i = 0; i < segments.size(); ++i)
      SW_CHECK(dilations[i] <= segments[i], "attention", where, ".sparse_dilations: rate ", dilations[i],
               " exceeds its segment of ", segments[i], " blocks (entry ", i, ")");
  } else {
    SW_CHECK(segments.empty() && dilations.empty(), "attention", where,
             ".sparse_segments / sparse_dilations: only for sparse_pattern dilated");
  }
  if (kind != PatternKind::bigbird) need(random == 0, "sparse_random", "0 unless sparse_pattern is bigbird", random);
}

void BuiltLayout::finish_view(int block_q, int block_k, int n_layouts) {
  view.block_q = block_q;
  view.block_k = block_k;
  view.n_layouts = n_layouts;
  view.row_ptr = row_ptr.data();
  view.col_idx = col_idx.data();
}

BuiltLayout build_layout(const SparsePattern& p, int64_t q_offset, int64_t Tq, int64_t Tk, int64_t n_heads) {
  SW_CHECK(p.block > 0 && p.block <= 4096 && p.local >= 1 && p.global >= 0 && p.stride >= 0, "block_layout",
           "pattern needs block in 1..4096, local >= 1, global >= 0, stride >= 0");
  SW_CHECK(n_heads >= 1, "block_layout", "n_heads must be >= 1, got ", n_heads);
  BuiltLayout L;
  const int64_t bq = q_offset % p.block == 0 ? p.block : 1;
  const int64_t rows = (Tq + bq - 1) / bq, kblocks = (Tk + p.block - 1) / p.block;
  const int64_t layouts = p.per_head() ? n_heads : 1;
  SW_CHECK(layouts * rows * kblocks < (int64_t{1} << 31), "block_layout", "layout of ", layouts, " x ", rows, " x ",
           kblocks, " blocks is too large");
  L.row_ptr.reserve(static_cast<size_t>(layouts * (rows + 1)));
  for (int64_t h = 0; h < layouts; ++h) {
    L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t qb = (q_offset + r * bq) / p.block;
      const std::vector<int64_t> extra = p.random_blocks(qb, h);
      size_t e = 0;
      for (int64_t kb = 0; kb <= qb && kb < kblocks; ++kb) {
        ++L.density_total;
        while (e < extra.size() && extra[e] < kb) ++e;
        const bool in_extra = e < extra.size() && extra[e] == kb;
        if (in_extra || p.allows_fixed(qb, kb)) L.col_idx.push_back(static_cast<int32_t>(kb)), ++L.density_nnz;
      }
      L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
    }
  }
  L.finish_view(static_cast<int>(bq), static_cast<int>(p.block), static_cast<int>(layouts));
  return L;
}

}  // namespace sw::nn
