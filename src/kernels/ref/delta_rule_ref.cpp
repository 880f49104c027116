#include "kernels/ref/delta_rule_ref.h"

#include <cmath>
#include <cstddef>
#include <vector>

namespace sw::kernels::ref {
namespace {

// Offsets into [B, T, H, D] and [B, H, K, V] tensors.
inline size_t tok(int b, int t, int h, int T, int H, int D) { return ((size_t(b) * T + t) * H + h) * D; }
inline size_t gate(int b, int t, int h, int T, int H) { return (size_t(b) * T + t) * H + h; }
inline size_t st(int b, int h, int H, int K, int V) { return (size_t(b) * H + h) * K * V; }

}  // namespace

void delta_rule_fwd(const double* q, const double* k, const double* v, const double* beta, const double* g,
                    const double* h0, double* o, double* ht, int B, int T, int H, int K, int V, double scale) {
  std::vector<double> S(size_t(K) * V), u(V);
  for (int bi = 0; bi < B; ++bi)
    for (int h = 0; h < H; ++h) {
      for (size_t i = 0; i < S.size(); ++i) S[i] = h0 ? h0[st(bi, h, H, K, V) + i] : 0.0;
      for (int t = 0; t < T; ++t) {
        const double* qt = q + tok(bi, t, h, T, H, K);
        const double* kt = k + tok(bi, t, h, T, H, K);
        const double* vt = v + tok(bi, t, h, T, H, V);
        double bt = beta[gate(bi, t, h, T, H)];
        double decay = g ? std::exp(g[gate(bi, t, h, T, H)]) : 1.0;
        for (auto& s : S) s *= decay;
        for (int j = 0; j < V; ++j) {
          double pred = 0;
          for (int i = 0; i < K; ++i) pred += S[size_t(i) * V + j] * kt[i];
          u[j] = bt * (vt[j] - pred);
        }
        for (int i = 0; i < K; ++i)
          for (int j = 0; j < V; ++j) S[size_t(i) * V + j] += kt[i] * u[j];
        double* ot = o + tok(bi, t, h, T, H, V);
        for (int j = 0; j < V; ++j) {
          double acc = 0;
          for (int i = 0; i < K; ++i) acc += S[size_t(i) * V + j] * qt[i];
          ot[j] = scale * acc;
        }
      }
      if (ht)
        for (size_t i = 0; i < S.size(); ++i) ht[st(bi, h, H, K, V) + i] = S[i];
    }
}

void delta_rule_bwd(const double* q, const double* k, const double* v, const double* beta, const double* g,
                    const double* h0, const double* d_o, const double* dht, double* dq, double* dk, double* dv,
                    double* dbeta, double* dg, double* dh0, int B, int T, int H, int K, int V, double scale) {
  const size_t KV = size_t(K) * V;
  std::vector<double> states(size_t(T + 1) * KV), dS(KV), Sp(KV), e(V), u(V), du(V);
  for (int bi = 0; bi < B; ++bi)
    for (int h = 0; h < H; ++h) {
      // Forward, keeping S_t for every t (states[t] is S before token t).
      for (size_t i = 0; i < KV; ++i) states[i] = h0 ? h0[st(bi, h, H, K, V) + i] : 0.0;
      for (int t = 0; t < T; ++t) {
        const double* kt = k + tok(bi, t, h, T, H, K);
        const double* vt = v + tok(bi, t, h, T, H, V);
        double bt = beta[gate(bi, t, h, T, H)];
        double decay = g ? std::exp(g[gate(bi, t, h, T, H)]) : 1.0;
        const double* Sprev = &states[size_t(t) * KV];
        double* Snext = &states[size_t(t + 1) * KV];
        for (size_t i = 0; i < KV; ++i) Snext[i] = decay * Sprev[i];
        for (int j = 0; j < V; ++j) {
          double pred = 0;
          for (int i = 0; i < K; ++i) pred += Snext[size_t(i) * V + j] * kt[i];
          u[j] = bt * (vt[j] - pred);
        }
        for (int i = 0; i < K; ++i)
          for (int j = 0; j < V; ++j) Snext[size_t(i) * V + j] += kt[i] * u[j];
      }
      // Reverse (fla.md 2.11).
      for (size_t i = 0; i < KV; ++i) dS[i] = dht ? dht[st(bi, h, H, K, V) + i] : 0.0;
      for (int t = T - 1; t >= 0; --t) {
        const double* qt = q + tok(bi, t, h, T, H, K);
        const double* kt = k + tok(bi, t, h, T, H, K);
        const double* vt = v + tok(bi, t, h, T, H, V);
        const double* dot = d_o + tok(bi, t, h, T, H, V);
        double bt = beta[gate(bi, t, h, T, H)];
        double decay = g ? std::exp(g[gate(bi, t, h, T, H)]) : 1.0;
        const double* Sprev = &states[size_t(t) * KV];
        const double* Scur = &states[size_t(t + 1) * KV];
        for (size_t i = 0; i < KV; ++i) Sp[i] = decay * Sprev[i];
        for (int j = 0; j < V; ++j) {
          double pred = 0;
          for (int i = 0; i < K; ++i) pred += Sp[size_t(i) * V + j] * kt[i];
          e[j] = vt[j] - pred;
          u[j] = bt * e[j];
        }
        // o_t = scale S_t^T q_t
        double* dqt = dq + tok(bi, t, h, T, H, K);
        for (int i = 0; i < K; ++i) {
          double acc = 0;
          for (int j = 0; j < V; ++j) acc += Scur[size_t(i) * V + j] * dot[j];
          dqt[i] = scale * acc;
          for (int j = 0; j < V; ++j) dS[size_t(i) * V + j] += scale * qt[i] * dot[j];
        }
        // S_t = S' + k u^T
        for (int j = 0; j < V; ++j) {
          double acc = 0;
          for (int i = 0; i < K; ++i) acc += dS[size_t(i) * V + j] * kt[i];
          du[j] = acc;
        }
        double* dkt = dk + tok(bi, t, h, T, H, K);
        for (int i = 0; i < K; ++i) {
          double acc = 0;
          for (int j = 0; j < V; ++j) acc += dS[size_t(i) * V + j] * u[j] - bt * Sp[size_t(i) * V + j] * du[j];
          dkt[i] = acc;
        }
        double* dvt = dv + tok(bi, t, h, T, H, V);
        double db = 0;
        for (int j = 0; j < V; ++j) {
          dvt[j] = bt * du[j];
          db += du[j] * e[j];
        }
        dbeta[gate(bi, t, h, T, H)] = db;
        // dS' = dS_t - beta k du^T; dg = sum(dS' * S'); dS_{t-1} = exp(g) dS'
        double dgt = 0;
        for (int i = 0; i < K; ++i)
          for (int j = 0; j < V; ++j) {
            double& d = dS[size_t(i) * V + j];
            d -= bt * kt[i] * du[j];
            dgt += d * Sp[size_t(i) * V + j];
            d *= decay;
          }
        if (dg) dg[gate(bi, t, h, T, H)] = g ? dgt : 0.0;
      }
      if (dh0)
        for (size_t i = 0; i < KV; ++i) dh0[st(bi, h, H, K, V) + i] = dS[i];
    }
}

void dplr_delta_rule_fwd(const double* r, const double* w, const double* k, const double* v, const double* a,
                         const double* b, const double* h0, double* o, double* ht, int B, int T, int H, int K,
                         int V, double scale) {
  std::vector<double> S(size_t(K) * V), sa(V);
  for (int bi = 0; bi < B; ++bi)
    for (int h = 0; h < H; ++h) {
      for (size_t i = 0; i < S.size(); ++i) S[i] = h0 ? h0[st(bi, h, H, K, V) + i] : 0.0;
      for (int t = 0; t < T; ++t) {
        const double* rt = r + tok(bi, t, h, T, H, K);
        const double* wt = w + tok(bi, t, h, T, H, K);
        const double* kt = k + tok(bi, t, h, T, H, K);
        const double* vt = v + tok(bi, t, h, T, H, V);
        const double* at = a + tok(bi, t, h, T, H, K);
        const double* bt = b + tok(bi, t, h, T, H, K);
        for (int j = 0; j < V; ++j) {
          double acc = 0;
          for (int i = 0; i < K; ++i) acc += at[i] * S[size_t(i) * V + j];
          sa[j] = acc;
        }
        for (int i = 0; i < K; ++i)
          for (int j = 0; j < V; ++j)
            S[size_t(i) * V + j] = std::exp(wt[i]) * S[size_t(i) * V + j] + bt[i] * sa[j] + kt[i] * vt[j];
        double* ot = o + tok(bi, t, h, T, H, V);
        for (int j = 0; j < V; ++j) {
          double acc = 0;
          for (int i = 0; i < K; ++i) acc += rt[i] * S[size_t(i) * V + j];
          ot[j] = scale * acc;
        }
      }
      if (ht)
        for (size_t i = 0; i < S.size(); ++i) ht[st(bi, h, H, K, V) + i] = S[i];
    }
}

void dplr_delta_rule_bwd(const double* r, const double* w, const double* k, const double* v, const double* a,
                         const double* b, const double* h0, const double* d_o, const double* dht, double* dr,
                         double* dw, double* dk, double* dv, double* da, double* db, double* dh0, int B, int T,
                         int H, int K, int V, double scale) {
  const size_t KV = size_t(K) * V;
  std::vector<double> states(size_t(T + 1) * KV), sas(size_t(T) * V), dS(KV), dsa(V);
  for (int bi = 0; bi < B; ++bi)
    for (int h = 0; h < H; ++h) {
      for (size_t i = 0; i < KV; ++i) states[i] = h0 ? h0[st(bi, h, H, K, V) + i] : 0.0;
      for (int t = 0; t < T; ++t) {
        const double* wt = w + tok(bi, t, h, T, H, K);
        const double* kt = k + tok(bi, t, h, T, H, K);
        const double* vt = v + tok(bi, t, h, T, H, V);
        const double* at = a + tok(bi, t, h, T, H, K);
        const double* bt = b + tok(bi, t, h, T, H, K);
        const double* Sprev = &states[size_t(t) * KV];
        double* Snext = &states[size_t(t + 1) * KV];
        double* sa = &sas[size_t(t) * V];
        for (int j = 0; j < V; ++j) {
          double acc = 0;
          for (int i = 0; i < K; ++i) acc += at[i] * Sprev[size_t(i) * V + j];
          sa[j] = acc;
        }
        for (int i = 0; i < K; ++i)
          for (int j = 0; j < V; ++j)
            Snext[size_t(i) * V + j] = std::exp(wt[i]) * Sprev[size_t(i) * V + j] + bt[i] * sa[j] + kt[i] * vt[j];
      }
      for (size_t i = 0; i < KV; ++i) dS[i] = dht ? dht[st(bi, h, H, K, V) + i] : 0.0;
      for (int t = T - 1; t >= 0; --t) {
        const double* rt = r + tok(bi, t, h, T, H, K);
        const double* wt = w + tok(bi, t, h, T, H, K);
        const double* kt = k + tok(bi, t, h, T, H, K);
        const double* vt = v + tok(bi, t, h, T, H, V);
        const double* at = a + tok(bi, t, h, T, H, K);
        const double* bt = b + tok(bi, t, h, T, H, K);
        const double* dot = d_o + tok(bi, t, h, T, H, V);
        const double* Sprev = &states[size_t(t) * KV];
        const double* Scur = &states[size_t(t + 1) * KV];
        const double* sa = &sas[size_t(t) * V];
        double* drt = dr + tok(bi, t, h, T, H, K);
        double* dwt = dw + tok(bi, t, h, T, H, K);
        double* dkt = dk + tok(bi, t, h, T, H, K);
        double* dvt = dv + tok(bi, t, h, T, H, V);
        double* dat = da + tok(bi, t, h, T, H, K);
        double* dbt = db + tok(bi, t, h, T, H, K);
        // o_t = scale S_t^T r_t
        for (int i = 0; i < K; ++i) {
          double acc = 0;
          for (int j = 0; j < V; ++j) {
            acc += Scur[size_t(i) * V + j] * dot[j];
            dS[size_t(i) * V + j] += scale * rt[i] * dot[j];
          }
          drt[i] = scale * acc;
        }
        // S_t = D S_{t-1} + b sa^T + k v^T
        for (int j = 0; j < V; ++j) {
          double accv = 0, accsa = 0;
          for (int i = 0; i < K; ++i) {
            accv += dS[size_t(i) * V + j] * kt[i];
            accsa += dS[size_t(i) * V + j] * bt[i];
          }
          dvt[j] = accv;
          dsa[j] = accsa;
        }
        for (int i = 0; i < K; ++i) {
          double acck = 0, accb = 0, accw = 0;
          for (int j = 0; j < V; ++j) {
            acck += dS[size_t(i) * V + j] * vt[j];
            accb += dS[size_t(i) * V + j] * sa[j];
            accw += dS[size_t(i) * V + j] * Sprev[size_t(i) * V + j];
          }
          dkt[i] = acck;
          dbt[i] = accb;
          dwt[i] = std::exp(wt[i]) * accw;
        }
        // sa = S_{t-1}^T a; dS_{t-1} = D dS_t + a dsa^T
        for (int i = 0; i < K; ++i) {
          double acc = 0;
          for (int j = 0; j < V; ++j) acc += Sprev[size_t(i) * V + j] * dsa[j];
          dat[i] = acc;
          for (int j = 0; j < V; ++j)
            dS[size_t(i) * V + j] = std::exp(wt[i]) * dS[size_t(i) * V + j] + at[i] * dsa[j];
        }
      }
      if (dh0)
        for (size_t i = 0; i < KV; ++i) dh0[st(bi, h, H, K, V) + i] = dS[i];
    }
}

}  // namespace sw::kernels::ref
