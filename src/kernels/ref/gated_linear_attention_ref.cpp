// f64 reference for gated linear attention; see the header for the equations.
#include "kernels/ref/gated_linear_attention_ref.h"

#include <cmath>
#include <cstddef>
#include <vector>

namespace sw::kernels::ref {
namespace {

// Log-decay of key channel kk at (b, t, h) for every gate mode.
double log_decay(const GlaDims& d, GlaGate gate, const double* g, int64_t b, int64_t t, int64_t h,
                 int64_t kk) {
  switch (gate) {
    case GlaGate::kNone: return 0.0;
    case GlaGate::kHeadConst: return g[h];
    case GlaGate::kScalar: return g[(b * d.seq_len + t) * d.heads + h];
    case GlaGate::kChannel: return g[((b * d.seq_len + t) * d.heads + h) * d.key_dim + kk];
  }
  return 0.0;
}

}  // namespace

void gla_forward_ref(const GlaDims& d, GlaGate gate, double scale, const double* q, const double* k,
                     const double* v, const double* g, const double* u, const double* h0, double* o,
                     double* ht) {
  const int64_t T = d.seq_len, H = d.heads, K = d.key_dim, V = d.value_dim;
  std::vector<double> S(K * V);
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < K * V; ++i) S[i] = h0 ? h0[(b * H + h) * K * V + i] : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const double* qt = q + ((b * T + t) * H + h) * K;
        const double* kt = k + ((b * T + t) * H + h) * K;
        const double* vt = v + ((b * T + t) * H + h) * V;
        double* ot = o + ((b * T + t) * H + h) * V;
        for (int64_t j = 0; j < V; ++j) ot[j] = 0.0;
        if (u) {  // RWKV-6: read the previous state, then the bonus for the current token
          double bonus = 0.0;
          for (int64_t i = 0; i < K; ++i) bonus += scale * qt[i] * u[h * K + i] * kt[i];
          for (int64_t i = 0; i < K; ++i)
            for (int64_t j = 0; j < V; ++j) ot[j] += scale * qt[i] * S[i * V + j];
          for (int64_t j = 0; j < V; ++j) ot[j] += bonus * vt[j];
        }
        for (int64_t i = 0; i < K; ++i) {
          const double a = std::exp(log_decay(d, gate, g, b, t, h, i));
          for (int64_t j = 0; j < V; ++j) S[i * V + j] = a * S[i * V + j] + kt[i] * vt[j];
        }
        if (!u) {
          for (int64_t i = 0; i < K; ++i)
            for (int64_t j = 0; j < V; ++j) ot[j] += scale * qt[i] * S[i * V + j];
        }
      }
      if (ht)
        for (int64_t i = 0; i < K * V; ++i) ht[(b * H + h) * K * V + i] = S[i];
    }
  }
}

void gla_backward_ref(const GlaDims& d, GlaGate gate, double scale, const double* q,
                      const double* k, const double* v, const double* g, const double* u,
                      const double* h0, const double* dout, const double* dht, double* dq,
                      double* dk, double* dv, double* dg, double* du, double* dh0) {
  const int64_t T = d.seq_len, H = d.heads, K = d.key_dim, V = d.value_dim;
  if (du)
    for (int64_t i = 0; i < H * K; ++i) du[i] = 0.0;
  if (dg && gate == GlaGate::kHeadConst)
    for (int64_t h = 0; h < H; ++h) dg[h] = 0.0;
  // states[t + 1] = S_t, states[0] = h0.
  std::vector<double> states((T + 1) * K * V), dS(K * V), a(K), dgt(K);
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < K * V; ++i) states[i] = h0 ? h0[(b * H + h) * K * V + i] : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const double* kt = k + ((b * T + t) * H + h) * K;
        const double* vt = v + ((b * T + t) * H + h) * V;
        const double* prev = &states[t * K * V];
        double* next = &states[(t + 1) * K * V];
        for (int64_t i = 0; i < K; ++i) {
          const double ai = std::exp(log_decay(d, gate, g, b, t, h, i));
          for (int64_t j = 0; j < V; ++j) next[i * V + j] = ai * prev[i * V + j] + kt[i] * vt[j];
        }
      }
      for (int64_t i = 0; i < K * V; ++i) dS[i] = dht ? dht[(b * H + h) * K * V + i] : 0.0;
      for (int64_t t = T - 1; t >= 0; --t) {
        const size_t row = static_cast<size_t>((b * T + t) * H + h);
        const double* qt = q + row * K;
        const double* kt = k + row * K;
        const double* vt = v + row * V;
        const double* dot = dout + row * V;
        double* dqt = dq + row * K;
        double* dkt = dk + row * K;
        double* dvt = dv + row * V;
        const double* prev = &states[t * K * V];  // S_{t-1}
        const double* cur = &states[(t + 1) * K * V];  // S_t
        for (int64_t i = 0; i < K; ++i) a[i] = std::exp(log_decay(d, gate, g, b, t, h, i));
        for (int64_t i = 0; i < K; ++i) dkt[i] = dqt[i] = 0.0;
        for (int64_t j = 0; j < V; ++j) dvt[j] = 0.0;
        if (u) {
          // o_t = S_{t-1}^T q' + (q' . (u ⊙ k)) v: dS (grad of S_t) stays as is for the update.
          double bonus = 0.0, dov = 0.0;
          for (int64_t i = 0; i < K; ++i) bonus += scale * qt[i] * u[h * K + i] * kt[i];
          for (int64_t j = 0; j < V; ++j) dov += dot[j] * vt[j];
          for (int64_t i = 0; i < K; ++i) {
            double s = 0.0;
            for (int64_t j = 0; j < V; ++j) s += prev[i * V + j] * dot[j];
            dqt[i] = scale * (s + dov * u[h * K + i] * kt[i]);
            dkt[i] += dov * u[h * K + i] * scale * qt[i];
            if (du) du[h * K + i] += dov * scale * qt[i] * kt[i];
          }
          for (int64_t j = 0; j < V; ++j) dvt[j] += bonus * dot[j];
        } else {
          // o_t = S_t^T q': adds q' do^T to the gradient of S_t.
          for (int64_t i = 0; i < K; ++i) {
            double s = 0.0;
            for (int64_t j = 0; j < V; ++j) {
              dS[i * V + j] += scale * qt[i] * dot[j];
              s += cur[i * V + j] * dot[j];
            }
            dqt[i] = scale * s;
          }
        }
        // S_t = diag(a) S_{t-1} + k v^T.
        for (int64_t i = 0; i < K; ++i) {
          double sk = 0.0, sg = 0.0;
          for (int64_t j = 0; j < V; ++j) {
            sk += dS[i * V + j] * vt[j];
            dvt[j] += dS[i * V + j] * kt[i];
            sg += dS[i * V + j] * prev[i * V + j];
          }
          dkt[i] += sk;
          dgt[i] = a[i] * sg;
        }
        if (u) {  // the read-out of token t used S_{t-1}
          for (int64_t i = 0; i < K; ++i)
            for (int64_t j = 0; j < V; ++j)
              dS[i * V + j] = a[i] * dS[i * V + j] + scale * qt[i] * dot[j];
        } else {
          for (int64_t i = 0; i < K; ++i)
            for (int64_t j = 0; j < V; ++j) dS[i * V + j] *= a[i];
        }
        if (dg) {
          double sum = 0.0;
          for (int64_t i = 0; i < K; ++i) sum += dgt[i];
          if (gate == GlaGate::kChannel)
            for (int64_t i = 0; i < K; ++i) dg[row * K + i] = dgt[i];
          else if (gate == GlaGate::kScalar)
            dg[row] = sum;
          else if (gate == GlaGate::kHeadConst)
            dg[h] += sum;
        }
      }
      if (dh0)
        for (int64_t i = 0; i < K * V; ++i) dh0[(b * H + h) * K * V + i] = dS[i];
    }
  }
}

}  // namespace sw::kernels::ref
