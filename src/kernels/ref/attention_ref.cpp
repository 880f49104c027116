#include "kernels/ref/attention_ref.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace sw::kernels::ref {

std::vector<uint8_t> attention_mask_ref(const AttentionParams& p, const AttentionDims& d, int b, int h) {
  std::vector<uint8_t> mask(static_cast<size_t>(d.Tq) * d.Tk, 0);
  const attention::BlockLayout& L = p.layout;
  for (int i = 0; i < d.Tq; ++i) {
    for (int j = 0; j < d.Tk; ++j) {
      const int64_t pos_q = p.q_offset + i, pos_k = j;
      const bool causal_ok = !p.causal || pos_k <= pos_q;
      const int64_t dist = p.causal ? pos_q - pos_k : std::llabs(pos_q - pos_k);
      const bool window_ok = p.window == 0 || dist < p.window;
      const bool is_sink = pos_k < p.n_sink;
      bool block_ok = true;
      if (L.block_q > 0) {
        const int n_qblocks = (d.Tq + L.block_q - 1) / L.block_q;
        const int which = L.n_layouts == 1 ? 0 : (L.n_layouts == d.Hq ? h : b * d.Hq + h);
        const int32_t* rp = L.row_ptr + static_cast<int64_t>(which) * (n_qblocks + 1);
        const int qb = i / L.block_q, kb = j / L.block_k;
        block_ok = false;
        for (int32_t e = rp[qb]; e < rp[qb + 1]; ++e) block_ok |= L.col_idx[e] == kb;
      }
      mask[static_cast<size_t>(i) * d.Tk + j] = causal_ok && (window_ok || is_sink) && block_ok;
    }
  }
  return mask;
}

namespace {

double dot(const double* a, const double* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

struct Index {
  const AttentionDims& d;
  size_t q(int b, int i, int h) const { return ((static_cast<size_t>(b) * d.Tq + i) * d.Hq + h) * d.Dk; }
  size_t o(int b, int i, int h) const { return ((static_cast<size_t>(b) * d.Tq + i) * d.Hq + h) * d.Dv; }
  size_t k(int b, int j, int h) const { return ((static_cast<size_t>(b) * d.Tk + j) * d.Hkv + h) * d.Dk; }
  size_t v(int b, int j, int h) const { return ((static_cast<size_t>(b) * d.Tk + j) * d.Hkv + h) * d.Dv; }
  size_t lse(int b, int h, int i) const { return (static_cast<size_t>(b) * d.Hq + h) * d.Tq + i; }
};

// Probabilities p[j] of row (b, h, i) (0 where masked), its lse and the sink probability.
void row_probs(const double* q, const double* k, const double* sink_logits, const AttentionDims& d,
               const AttentionParams& p, const std::vector<uint8_t>& mask, int b, int h, int i,
               std::vector<double>& prob, double* lse, double* p_sink) {
  const Index ix{d};
  const int hk = h / (d.Hq / d.Hkv);
  const double scale = attention::effective_scale(p, d.Dk);
  std::vector<double> s(d.Tk, 0.0);
  double mx = -INFINITY;
  bool any = false;
  for (int j = 0; j < d.Tk; ++j) {
    if (!mask[static_cast<size_t>(i) * d.Tk + j]) continue;
    s[j] = scale * dot(q + ix.q(b, i, h), k + ix.k(b, j, hk), d.Dk);
    mx = std::max(mx, s[j]);
    any = true;
  }
  if (sink_logits) mx = std::max(mx, sink_logits[h]);
  prob.assign(d.Tk, 0.0);
  *p_sink = 0;
  if (!any && !sink_logits) {
    *lse = attention::kEmptyRowLse;
    return;
  }
  double z = sink_logits ? std::exp(sink_logits[h] - mx) : 0.0;
  for (int j = 0; j < d.Tk; ++j)
    if (mask[static_cast<size_t>(i) * d.Tk + j]) z += std::exp(s[j] - mx);
  for (int j = 0; j < d.Tk; ++j)
    if (mask[static_cast<size_t>(i) * d.Tk + j]) prob[j] = std::exp(s[j] - mx) / z;
  if (sink_logits) *p_sink = std::exp(sink_logits[h] - mx) / z;
  *lse = mx + std::log(z);
}

}  // namespace

void attention_forward_ref(const double* q, const double* k, const double* v, const double* sink_logits,
                           const AttentionDims& d, const AttentionParams& p, double* o, double* lse) {
  const Index ix{d};
  std::vector<double> prob;
  for (int b = 0; b < d.B; ++b) {
    for (int h = 0; h < d.Hq; ++h) {
      const std::vector<uint8_t> mask = attention_mask_ref(p, d, b, h);
      const int hk = h / (d.Hq / d.Hkv);
      for (int i = 0; i < d.Tq; ++i) {
        double l, ps;
        row_probs(q, k, sink_logits, d, p, mask, b, h, i, prob, &l, &ps);
        lse[ix.lse(b, h, i)] = l;
        double* out = o + ix.o(b, i, h);
        for (int c = 0; c < d.Dv; ++c) out[c] = 0;
        for (int j = 0; j < d.Tk; ++j)
          for (int c = 0; c < d.Dv; ++c) out[c] += prob[j] * v[ix.v(b, j, hk) + c];
      }
    }
  }
}

void attention_backward_ref(const double* q, const double* k, const double* v, const double* sink_logits,
                            const double* dout, const double* dlse, const AttentionDims& d,
                            const AttentionParams& p, double* dq, double* dk, double* dv, double* dsink) {
  const Index ix{d};
  const double scale = attention::effective_scale(p, d.Dk);
  std::fill(dq, dq + static_cast<size_t>(d.B) * d.Tq * d.Hq * d.Dk, 0.0);
  std::fill(dk, dk + static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dk, 0.0);
  std::fill(dv, dv + static_cast<size_t>(d.B) * d.Tk * d.Hkv * d.Dv, 0.0);
  if (dsink) std::fill(dsink, dsink + d.Hq, 0.0);
  std::vector<double> prob, out(d.Dv);
  for (int b = 0; b < d.B; ++b) {
    for (int h = 0; h < d.Hq; ++h) {
      const std::vector<uint8_t> mask = attention_mask_ref(p, d, b, h);
      const int hk = h / (d.Hq / d.Hkv);
      for (int i = 0; i < d.Tq; ++i) {
        double l, p_sink;
        row_probs(q, k, sink_logits, d, p, mask, b, h, i, prob, &l, &p_sink);
        std::fill(out.begin(), out.end(), 0.0);
        for (int j = 0; j < d.Tk; ++j)
          for (int c = 0; c < d.Dv; ++c) out[c] += prob[j] * v[ix.v(b, j, hk) + c];
        const double* g = dout + ix.o(b, i, h);
        // d lse / d s_ij = p_ij, so the lse gradient enters as a shift of delta.
        const double delta = dot(g, out.data(), d.Dv) - (dlse ? dlse[ix.lse(b, h, i)] : 0.0);
        for (int j = 0; j < d.Tk; ++j) {
          if (prob[j] == 0.0) continue;
          const double dp = dot(g, v + ix.v(b, j, hk), d.Dv);
          const double ds = prob[j] * (dp - delta);
          for (int c = 0; c < d.Dk; ++c) {
            dq[ix.q(b, i, h) + c] += scale * ds * k[ix.k(b, j, hk) + c];
            dk[ix.k(b, j, hk) + c] += scale * ds * q[ix.q(b, i, h) + c];
          }
          for (int c = 0; c < d.Dv; ++c) dv[ix.v(b, j, hk) + c] += prob[j] * g[c];
        }
        if (dsink && sink_logits) dsink[h] -= p_sink * delta;
      }
    }
  }
}

double fake_quantize_minmax_ref(double* x, int n, int stride, int bits) {
  double mn = INFINITY, mx = -INFINITY;
  for (int i = 0; i < n; ++i) {
    mn = std::min(mn, x[static_cast<size_t>(i) * stride]);
    mx = std::max(mx, x[static_cast<size_t>(i) * stride]);
  }
  const double levels = (1 << bits) - 1;
  const double step = (mx - mn) / levels;
  for (int i = 0; i < n; ++i) {
    double& e = x[static_cast<size_t>(i) * stride];
    const double code = step > 0 ? std::clamp(std::nearbyint((e - mn) / step), 0.0, levels) : 0.0;
    e = code * step + mn;
  }
  return step;
}

void kivi_fake_quantize_ref(double* k, double* v, int B, int L, int Hkv, int Dk, int Dv, int group, int residual,
                            int bits) {
  const int nq_k = std::max(0, (L - residual) / group * group);
  const int nq_v = std::max(0, L - residual);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < Hkv; ++h) {
      for (int t0 = 0; t0 < nq_k; t0 += group)
        for (int c = 0; c < Dk; ++c)
          fake_quantize_minmax_ref(k + ((static_cast<size_t>(b) * L + t0) * Hkv + h) * Dk + c, group, Hkv * Dk, bits);
      for (int t = 0; t < nq_v; ++t)
        fake_quantize_minmax_ref(v + ((static_cast<size_t>(b) * L + t) * Hkv + h) * Dv, Dv, 1, bits);
    }
  }
}

}  // namespace sw::kernels::ref
