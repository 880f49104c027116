// Internal split-KV decode loop shared by the fp32, bf16 and KIVI caches (not a public API).
//
// Work item = (batch, segment). The visible keys (at most two intervals: sinks and window; the
// same for every head since visibility depends only on positions) are split evenly into segments.
// An item walks its keys in memory order of the [L, Hkv, D] cache (key-major, all kv heads), so
// the cache streams sequentially, and each key/value row is read (and, for bf16/int8, converted)
// once and used by the group * Tn query rows of its kv head. Each item produces per query row a
// partial (running max m, sum l, unnormalised output); partials and the learned sink are merged by
// log-sum-exp. Partials live in the calling thread's scratch slot 1, per-item buffers in slots 0
// and 2.
//
// A Source provides the cache rows as fp32:
//   const float* key(int b, int hk, int j, float* tmp) const;    // [Dk], may point into tmp
//   const float* value(int b, int hk, int j, float* tmp) const;  // [Dv], may point into tmp
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/scratch.h"
#include "kernels/attention/attention_params.h"
#include "kernels/attention/attention_tiles.h"

namespace sw::kernels::attention::detail {

struct DecodeShape {
  int B, Tn, Hq, Hkv, Dk, Dv;
  int length;  // cached tokens incl. the new ones; new token t sits at position length - Tn + t
};

inline constexpr int kDecodeBlock = 64;         // keys per online-softmax step
inline constexpr int kMinSegmentKeys = 256;     // below this a segment's merge costs more than it saves
inline constexpr int kMaxSegments = 64;

// Keys visible to some new token, as at most two disjoint intervals in increasing order.
struct KeyIntervals {
  int n = 0;
  int lo[2], hi[2];
  int64_t total() const { return (n > 0 ? hi[0] - lo[0] : 0) + (n > 1 ? hi[1] - lo[1] : 0); }
};

inline void add_to_union(const VisibleKeys& vk, int64_t* se, int64_t* lo, int64_t* hi) {
  *se = std::max(*se, vk.sink_end);
  if (vk.lo < vk.hi) {
    *lo = std::min(*lo, vk.lo);
    *hi = std::max(*hi, vk.hi);
  }
}

// Union [0, se) + [lo, hi) as disjoint ordered intervals (hi == 0: no window part).
inline KeyIntervals make_intervals(int64_t se, int64_t lo, int64_t hi) {
  KeyIntervals iv;
  if (hi == 0) lo = hi = se;
  if (se >= lo) {  // overlapping or touching
    iv.lo[0] = 0;
    iv.hi[0] = static_cast<int>(std::max(se, hi));
    iv.n = iv.hi[0] > 0 ? 1 : 0;
    return iv;
  }
  if (se > 0) {
    iv.lo[iv.n] = 0;
    iv.hi[iv.n++] = static_cast<int>(se);
  }
  iv.lo[iv.n] = static_cast<int>(lo);
  iv.hi[iv.n++] = static_cast<int>(hi);
  return iv;
}

inline int auto_segments(int64_t base_items, int64_t visible_keys) {
  const int64_t threads = omp_get_max_threads();
  const int64_t want = (4 * threads + base_items - 1) / base_items;
  const int64_t cap = std::max<int64_t>(1, visible_keys / kMinSegmentKeys);
  return static_cast<int>(std::clamp<int64_t>(std::min(want, cap), 1, kMaxSegments));
}

template <class Source>
void decode_attention_core(const float* q,  // [B, Tn, Hq, Dk]
                           const Source& src, const DecodeShape& s, const AttentionParams& p, int num_segments,
                           float* o,     // [B, Tn, Hq, Dv]
                           float* lse) { // [B, Hq, Tn] or nullptr
  const int group = s.Hq / s.Hkv;
  const int rows = s.Hq * s.Tn;  // query rows of one sequence, head-major: r = h * Tn + t
  const int64_t q_base = static_cast<int64_t>(s.length) - s.Tn;
  int64_t se = 0, lo = INT64_MAX, hi = 0;  // union of the visible keys of the Tn positions
  for (int t = 0; t < s.Tn; ++t) add_to_union(visible_keys(p, q_base + t, s.length), &se, &lo, &hi);
  const KeyIntervals iv = make_intervals(se, lo, hi);
  const int64_t total = iv.total();
  const int nseg = num_segments > 0 ? std::min(num_segments, kMaxSegments) : auto_segments(s.B, total);
  const size_t part_stride = static_cast<size_t>(s.Dv) + 2;  // m, l, acc[Dv]
  const int64_t n_items = static_cast<int64_t>(s.B) * nseg;
  float* partials = scratch_floats(1, static_cast<size_t>(n_items) * rows * part_stride);
  const float qscale = effective_scale(p, s.Dk) * kLog2e;

#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < n_items; ++item) {
    const int seg = static_cast<int>(item % nseg);
    const int b = static_cast<int>(item / nseg);
    float* buf = scratch_floats(0, static_cast<size_t>(rows) * (s.Dk + kDecodeBlock) + s.Dk + s.Dv);
    float* qs = buf;                                              // [rows][Dk] q * scale * log2(e)
    float* sc = qs + static_cast<size_t>(rows) * s.Dk;            // [rows][kDecodeBlock] scores, then p
    float* ktmp = sc + static_cast<size_t>(rows) * kDecodeBlock;  // [Dk] converted key row
    float* vtmp = ktmp + s.Dk;                                    // [Dv] converted value row
    // Visible set of each new token, as doubles (exact for any realistic position).
    double* vis = scratch_doubles(2, static_cast<size_t>(3) * s.Tn);
    float* part = partials + static_cast<size_t>(item) * rows * part_stride;
    for (int t = 0; t < s.Tn; ++t) {
      const VisibleKeys w = visible_keys(p, q_base + t, s.length);
      vis[3 * t] = static_cast<double>(w.sink_end);
      vis[3 * t + 1] = static_cast<double>(w.lo);
      vis[3 * t + 2] = static_cast<double>(w.hi);
    }
    for (int r = 0; r < rows; ++r) {
      const int h = r / s.Tn, t = r % s.Tn;
      const float* qr = q + ((static_cast<size_t>(b) * s.Tn + t) * s.Hq + h) * s.Dk;
      for (int d = 0; d < s.Dk; ++d) qs[static_cast<size_t>(r) * s.Dk + d] = qr[d] * qscale;
      float* pr = part + static_cast<size_t>(r) * part_stride;
      pr[0] = kNegInf;
      pr[1] = 0.f;
      std::memset(pr + 2, 0, sizeof(float) * s.Dv);
    }
    const int64_t seg_len = (total + nseg - 1) / nseg;
    const int64_t v0 = std::min<int64_t>(total, seg * seg_len), v1 = std::min<int64_t>(total, v0 + seg_len);
    const int rows_per_kv = group * s.Tn;  // rows of kv head hk: [hk * rows_per_kv, (hk + 1) * rows_per_kv)

    auto process_range = [&](int j_begin, int j_end) {
      for (int jb = j_begin; jb < j_end; jb += kDecodeBlock) {
        const int nk = std::min(kDecodeBlock, j_end - jb);
        for (int jj = 0; jj < nk; ++jj) {
          const int j = jb + jj;
          for (int hk = 0; hk < s.Hkv; ++hk) {
            const float* kr = src.key(b, hk, j, ktmp);
            for (int r = hk * rows_per_kv; r < (hk + 1) * rows_per_kv; ++r) {
              const double* w = vis + 3 * (r % s.Tn);
              float dot = kNegInf;
              if (j < w[0] || (j >= w[1] && j < w[2])) {
                const float* qr = qs + static_cast<size_t>(r) * s.Dk;
                dot = 0.f;
#pragma omp simd reduction(+ : dot)
                for (int d = 0; d < s.Dk; ++d) dot += qr[d] * kr[d];
              }
              sc[static_cast<size_t>(r) * kDecodeBlock + jj] = dot;
            }
          }
        }
        for (int r = 0; r < rows; ++r) {
          float* srow = sc + static_cast<size_t>(r) * kDecodeBlock;
          float* pr = part + static_cast<size_t>(r) * part_stride;
          float mt = kNegInf;
          for (int jj = 0; jj < nk; ++jj) mt = std::max(mt, srow[jj]);
          const float mn = std::max(pr[0], mt);
          const float mu = mn == kNegInf ? 0.f : mn;  // nothing seen yet: every p is exactly 0
          const float alpha = exp2_softmax(pr[0] - mu);
          float sum = 0.f;
#pragma omp simd reduction(+ : sum)
          for (int jj = 0; jj < nk; ++jj) {
            srow[jj] = exp2_softmax(srow[jj] - mu);
            sum += srow[jj];
          }
          pr[0] = mn;
          pr[1] = pr[1] * alpha + sum;
          if (alpha != 1.f) {
            float* acc = pr + 2;
#pragma omp simd
            for (int d = 0; d < s.Dv; ++d) acc[d] *= alpha;
          }
        }
        for (int jj = 0; jj < nk; ++jj) {
          for (int hk = 0; hk < s.Hkv; ++hk) {
            const float* vr = src.value(b, hk, jb + jj, vtmp);
            for (int r = hk * rows_per_kv; r < (hk + 1) * rows_per_kv; ++r) {
              const float pj = sc[static_cast<size_t>(r) * kDecodeBlock + jj];
              if (pj == 0.f) continue;
              float* acc = part + static_cast<size_t>(r) * part_stride + 2;
#pragma omp simd
              for (int d = 0; d < s.Dv; ++d) acc[d] += pj * vr[d];
            }
          }
        }
      }
    };
    // The segment's offsets [v0, v1) in the concatenation of the intervals, mapped back to keys.
    int64_t offset = 0;
    for (int c = 0; c < iv.n; ++c) {
      const int64_t len = iv.hi[c] - iv.lo[c];
      const int64_t a = std::max(v0, offset), e = std::min(v1, offset + len);
      if (a < e) process_range(static_cast<int>(iv.lo[c] + (a - offset)), static_cast<int>(iv.lo[c] + (e - offset)));
      offset += len;
    }
  }

  // Merge the segments (and the learned sink) of every (b, query head, token).
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < static_cast<int64_t>(s.B) * rows; ++row) {
    const int r = static_cast<int>(row % rows), b = static_cast<int>(row / rows);
    const int h = r / s.Tn, t = r % s.Tn;
    auto partial = [&](int c) { return partials + ((static_cast<size_t>(b) * nseg + c) * rows + r) * part_stride; };
    float m = p.sink_logits ? p.sink_logits[h] * kLog2e : kNegInf;
    for (int c = 0; c < nseg; ++c) m = std::max(m, partial(c)[0]);
    float* out = o + ((static_cast<size_t>(b) * s.Tn + t) * s.Hq + h) * s.Dv;
    std::memset(out, 0, sizeof(float) * s.Dv);
    float l = 0.f;
    if (m != kNegInf) {
      if (p.sink_logits) l = exp2_softmax(p.sink_logits[h] * kLog2e - m);
      for (int c = 0; c < nseg; ++c) {
        const float* pr = partial(c);
        const float w = exp2_softmax(pr[0] - m);
        if (w == 0.f) continue;
        l += w * pr[1];
#pragma omp simd
        for (int d = 0; d < s.Dv; ++d) out[d] += w * pr[2 + d];
      }
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int d = 0; d < s.Dv; ++d) out[d] *= inv;
    if (lse) lse[(static_cast<size_t>(b) * s.Hq + h) * s.Tn + t] = l > 0.f ? (m + std::log2(l)) * kLn2 : kEmptyRowLse;
  }
}

}  // namespace sw::kernels::attention::detail
