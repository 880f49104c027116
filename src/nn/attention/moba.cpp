#include "nn/attention/moba.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace sw::nn {

BuiltLayout moba_layout(const float* q, const float* k, const MobaShape& s, int64_t block, int64_t topk) {
  SW_CHECK(block >= 1 && block <= 4096 && topk >= 1, "moba", "needs block in 1..4096 and topk >= 1, got ", block,
           ", ", topk);
  SW_CHECK(s.Hkv > 0 && s.Hq % s.Hkv == 0 && s.q_offset >= 0 && s.q_offset + s.Tq <= s.Tk, "moba",
           "bad shape: Hq ", s.Hq, " Hkv ", s.Hkv, " q_offset ", s.q_offset, " Tq ", s.Tq, " Tk ", s.Tk);
  const int64_t B = s.B, Tq = s.Tq, Tk = s.Tk, Hq = s.Hq, Hkv = s.Hkv, D = s.D, group = Hq / Hkv;
  // Only complete blocks are ever scored (a query's earlier blocks end at or before it).
  const int64_t full = Tk / block;
  const int64_t last_pos = s.q_offset + Tq - 1;
  const int64_t scored = std::min(full, Tq > 0 ? last_pos / block : 0);
  SW_CHECK(static_cast<double>(B) * Hq * Tq * (std::min(topk, scored + 1) + 1) < 2.0e9, "moba", "layout too large");
  // mu[b][hk][blk][d]: mean of the block's keys, summed in token order then divided.
  std::vector<float> mu(static_cast<size_t>(B * Hkv * std::max<int64_t>(scored, 0) * D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t blk = 0; blk < scored; ++blk) {
        float* m = mu.data() + ((b * Hkv + hk) * scored + blk) * D;
        for (int64_t j = blk * block; j < (blk + 1) * block; ++j) {
          const float* kr = k + ((b * Tk + j) * Hkv + hk) * D;
          for (int64_t d = 0; d < D; ++d) m[d] += kr[d];
        }
        const float inv = static_cast<float>(block);
        for (int64_t d = 0; d < D; ++d) m[d] /= inv;
      }

  BuiltLayout L;
  L.row_ptr.reserve(static_cast<size_t>(B * Hq * (Tq + 1)));
  std::vector<float> gate;
  std::vector<int32_t> order;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / group;
      L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
      for (int64_t t = 0; t < Tq; ++t) {
        const int64_t pos = s.q_offset + t, c = pos / block;
        const float* qr = q + ((b * Tq + t) * Hq + h) * D;
        gate.assign(static_cast<size_t>(c), 0.f);
        order.resize(static_cast<size_t>(c));
        for (int64_t blk = 0; blk < c; ++blk) {
          const float* m = mu.data() + ((b * Hkv + hk) * scored + blk) * D;
          float g = 0.f;
          for (int64_t d = 0; d < D; ++d) g += qr[d] * m[d];
          gate[static_cast<size_t>(blk)] = std::isnan(g) ? -INFINITY : g;
          order[static_cast<size_t>(blk)] = static_cast<int32_t>(blk);
        }
        const int64_t pick = std::min<int64_t>(topk - 1, c);
        std::partial_sort(order.begin(), order.begin() + pick, order.end(), [&](int32_t a, int32_t x) {
          const float ga = gate[static_cast<size_t>(a)], gx = gate[static_cast<size_t>(x)];
          return ga > gx || (ga == gx && a < x);
        });
        const size_t start = L.col_idx.size();
        L.col_idx.insert(L.col_idx.end(), order.begin(), order.begin() + pick);
        L.col_idx.push_back(static_cast<int32_t>(c));
        std::sort(L.col_idx.begin() + static_cast<std::ptrdiff_t>(start), L.col_idx.end());
        L.density_nnz += pick + 1;
        L.density_total += c + 1;
        L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
      }
    }
  L.finish_view(1, static_cast<int>(block), static_cast<int>(B * Hq));
  return L;
}

}  // namespace sw::nn
