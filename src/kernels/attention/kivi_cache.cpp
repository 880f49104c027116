#include "kernels/attention/kivi_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/attention/decode_core.h"

namespace sw::kernels::attention {
namespace {

int row_bytes(int D, int bits) { return D * bits / 8; }
int ring_size(const KiviConfig& c) { return c.residual + c.group; }
size_t head_index(const KiviConfig& c, int b, int hk) { return static_cast<size_t>(b) * c.Hkv + hk; }

float quantize_code(float x, float mn, float step, float levels) {
  if (!(step > 0.f)) return 0.f;
  return std::clamp(std::nearbyint((x - mn) / step), 0.f, levels);
}

// Packs codes[0..D) (small integers as floats) into a row of D * bits / 8 bytes.
void pack_row(const float* codes, int D, int bits, uint8_t* row) {
  if (bits == 8) {
    for (int d = 0; d < D; ++d) row[d] = static_cast<uint8_t>(codes[d]);
    return;
  }
  std::memset(row, 0, row_bytes(D, bits));
  for (int d = 0; d < D; ++d) {
    const int bit = d * bits;
    row[bit >> 3] |= static_cast<uint8_t>(static_cast<uint32_t>(codes[d]) << (bit & 7));
  }
}

// out[d] = code_d * step[d * step_stride] + mn[d * step_stride].
void dequantize_row(const uint8_t* row, int D, int bits, const float* step, const float* mn, int step_stride,
                    float* out) {
  if (bits == 8) {
    if (step_stride == 1) {
#pragma omp simd
      for (int d = 0; d < D; ++d) out[d] = static_cast<float>(row[d]) * step[d] + mn[d];
    } else {
      const float s = step[0], m = mn[0];
#pragma omp simd
      for (int d = 0; d < D; ++d) out[d] = static_cast<float>(row[d]) * s + m;
    }
    return;
  }
  // Sub-byte codes: split every byte into its 8 / bits codes, then apply the affine map.
  if (bits == 4) {
    for (int i = 0; i < D / 2; ++i) {
      const uint8_t byte = row[i];
      out[2 * i] = static_cast<float>(byte & 15u);
      out[2 * i + 1] = static_cast<float>(byte >> 4);
    }
  } else {
    for (int i = 0; i < D / 4; ++i) {
      const uint8_t byte = row[i];
      out[4 * i] = static_cast<float>(byte & 3u);
      out[4 * i + 1] = static_cast<float>((byte >> 2) & 3u);
      out[4 * i + 2] = static_cast<float>((byte >> 4) & 3u);
      out[4 * i + 3] = static_cast<float>(byte >> 6);
    }
  }
  if (step_stride == 1) {
#pragma omp simd
    for (int d = 0; d < D; ++d) out[d] = out[d] * step[d] + mn[d];
  } else {
    const float st = step[0], m = mn[0];
#pragma omp simd
    for (int d = 0; d < D; ++d) out[d] = out[d] * st + m;
  }
}

// Quantises key tokens [t0, t0 + G) of head (b, hk), read from the fp32 ring, as one group.
void quantize_key_group(KiviCache& cache, int b, int hk, int t0, float* tmp /*[3 * Dk]*/) {
  const KiviConfig& c = cache.cfg;
  const int ring = ring_size(c), Dk = c.Dk;
  const float levels = static_cast<float>((1 << c.bits) - 1);
  const size_t h = head_index(c, b, hk);
  const float* recent = cache.k_recent + h * ring * Dk;
  float* mn = tmp;
  float* mx = tmp + Dk;
  float* codes = tmp + 2 * Dk;
  for (int d = 0; d < Dk; ++d) {
    mn[d] = INFINITY;
    mx[d] = -INFINITY;
  }
  for (int t = t0; t < t0 + c.group; ++t) {
    const float* x = recent + static_cast<size_t>(t % ring) * Dk;
#pragma omp simd
    for (int d = 0; d < Dk; ++d) {
      mn[d] = std::min(mn[d], x[d]);
      mx[d] = std::max(mx[d], x[d]);
    }
  }
  const size_t g = h * (c.capacity / c.group) + t0 / c.group;
  float* step = cache.k_step + g * Dk;
  float* kmin = cache.k_min + g * Dk;
  for (int d = 0; d < Dk; ++d) {
    step[d] = (mx[d] - mn[d]) / levels;
    kmin[d] = mn[d];
  }
  for (int t = t0; t < t0 + c.group; ++t) {
    const float* x = recent + static_cast<size_t>(t % ring) * Dk;
    for (int d = 0; d < Dk; ++d) codes[d] = quantize_code(x[d], kmin[d], step[d], levels);
    pack_row(codes, Dk, c.bits, cache.k_codes + (h * c.capacity + t) * row_bytes(Dk, c.bits));
  }
}

// Quantises value token t of head (b, hk), read from the fp32 ring, over its Dv channels.
void quantize_value_token(KiviCache& cache, int b, int hk, int t, float* tmp /*[Dv]*/) {
  const KiviConfig& c = cache.cfg;
  const int ring = ring_size(c), Dv = c.Dv;
  const float levels = static_cast<float>((1 << c.bits) - 1);
  const size_t h = head_index(c, b, hk);
  const float* x = cache.v_recent + (h * ring + t % ring) * Dv;
  float mn = INFINITY, mx = -INFINITY;
  for (int d = 0; d < Dv; ++d) {
    mn = std::min(mn, x[d]);
    mx = std::max(mx, x[d]);
  }
  const float step = (mx - mn) / levels;
  cache.v_step[h * c.capacity + t] = step;
  cache.v_min[h * c.capacity + t] = mn;
  for (int d = 0; d < Dv; ++d) tmp[d] = quantize_code(x[d], mn, step, levels);
  pack_row(tmp, Dv, c.bits, cache.v_codes + (h * c.capacity + t) * row_bytes(Dv, c.bits));
}

// Cache rows handed to the decode core as fp32: dequantised or straight from the fp32 rings.
struct KiviSource {
  const KiviCache& cache;
  int nq_k, nq_v;

  const float* key(int b, int hk, int j, float* tmp) const {
    const KiviConfig& c = cache.cfg;
    const size_t h = head_index(c, b, hk);
    if (j >= nq_k) return cache.k_recent + (h * ring_size(c) + j % ring_size(c)) * c.Dk;
    const size_t g = h * (c.capacity / c.group) + j / c.group;
    dequantize_row(cache.k_codes + (h * c.capacity + j) * row_bytes(c.Dk, c.bits), c.Dk, c.bits,
                   cache.k_step + g * c.Dk, cache.k_min + g * c.Dk, 1, tmp);
    return tmp;
  }
  const float* value(int b, int hk, int j, float* tmp) const {
    const KiviConfig& c = cache.cfg;
    const size_t h = head_index(c, b, hk);
    if (j >= nq_v) return cache.v_recent + (h * ring_size(c) + j % ring_size(c)) * c.Dv;
    dequantize_row(cache.v_codes + (h * c.capacity + j) * row_bytes(c.Dv, c.bits), c.Dv, c.bits,
                   cache.v_step + h * c.capacity + j, cache.v_min + h * c.capacity + j, 0, tmp);
    return tmp;
  }
};

}  // namespace

KiviSizes kivi_buffer_sizes(const KiviConfig& c) {
  const size_t heads = static_cast<size_t>(c.B) * c.Hkv;
  const size_t groups = heads * (c.capacity / c.group);
  return KiviSizes{heads * c.capacity * row_bytes(c.Dk, c.bits),
                   groups * c.Dk,
                   groups * c.Dk,
                   heads * c.capacity * row_bytes(c.Dv, c.bits),
                   heads * c.capacity,
                   heads * c.capacity,
                   heads * ring_size(c) * c.Dk,
                   heads * ring_size(c) * c.Dv};
}

void kivi_append(KiviCache& cache, const float* k, const float* v, int T) {
  const KiviConfig& c = cache.cfg;
  SW_DASSERT(cache.length + T <= c.capacity && c.capacity % c.group == 0);
  SW_DASSERT((c.Dk * c.bits) % 8 == 0 && (c.Dv * c.bits) % 8 == 0);
  const int L0 = cache.length, ring = ring_size(c);
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < static_cast<int64_t>(c.B) * c.Hkv; ++bh) {
    const int b = static_cast<int>(bh / c.Hkv), hk = static_cast<int>(bh % c.Hkv);
    float* tmp = scratch_floats(0, static_cast<size_t>(3) * std::max(c.Dk, c.Dv));
    const size_t h = head_index(c, b, hk);
    // Token by token: a window never holds more than R + G tokens, so the rings cannot overflow.
    for (int t = 0; t < T; ++t) {
      const int pos = L0 + t;
      const size_t src = (static_cast<size_t>(b) * T + t) * c.Hkv + hk;
      std::memcpy(cache.k_recent + (h * ring + pos % ring) * c.Dk, k + src * c.Dk, sizeof(float) * c.Dk);
      std::memcpy(cache.v_recent + (h * ring + pos % ring) * c.Dv, v + src * c.Dv, sizeof(float) * c.Dv);
      const int qk_before = kivi_quantized_keys(c, pos), qk_after = kivi_quantized_keys(c, pos + 1);
      if (qk_after > qk_before) quantize_key_group(cache, b, hk, qk_before, tmp);
      for (int u = kivi_quantized_values(c, pos); u < kivi_quantized_values(c, pos + 1); ++u)
        quantize_value_token(cache, b, hk, u, tmp);
    }
  }
  cache.length = L0 + T;
}

void kivi_dequantize(const KiviCache& cache, float* k, float* v) {
  const KiviConfig& c = cache.cfg;
  const KiviSource src{cache, kivi_quantized_keys(c, cache.length), kivi_quantized_values(c, cache.length)};
  float* tmp = scratch_floats(0, std::max(c.Dk, c.Dv));
  for (int b = 0; b < c.B; ++b)
    for (int j = 0; j < cache.length; ++j)
      for (int hk = 0; hk < c.Hkv; ++hk) {
        const size_t row = (static_cast<size_t>(b) * cache.length + j) * c.Hkv + hk;
        std::memcpy(k + row * c.Dk, src.key(b, hk, j, tmp), sizeof(float) * c.Dk);
        std::memcpy(v + row * c.Dv, src.value(b, hk, j, tmp), sizeof(float) * c.Dv);
      }
}

void kivi_decode_attention(const float* q, const KiviCache& cache, int Hq, int Tn, const AttentionParams& params,
                           int num_segments, float* o, float* lse) {
  const KiviConfig& c = cache.cfg;
  SW_DASSERT(c.Hkv > 0 && Hq % c.Hkv == 0 && Tn <= cache.length);
  const KiviSource src{cache, kivi_quantized_keys(c, cache.length), kivi_quantized_values(c, cache.length)};
  const detail::DecodeShape shape{c.B, Tn, Hq, c.Hkv, c.Dk, c.Dv, cache.length};
  detail::decode_attention_core(q, src, shape, params, num_segments, o, lse);
}

}  // namespace sw::kernels::attention
