#include "kernels/ref/scan_ref.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sw::kernels::ref {
namespace {

double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The discretisation step of (b, t, d) and its derivative w.r.t. the raw delta.
void step_size(const SelectiveScanRefInputs& in, int64_t i_btd, int64_t d, double* dt, double* ddt_draw) {
  const double x = in.delta[i_btd] + (in.delta_bias ? in.delta_bias[d] : 0.0);
  if (in.delta_softplus) {
    *dt = softplus(x);
    *ddt_draw = x > 20.0 ? 1.0 : sigmoid(x);
  } else {
    *dt = x;
    *ddt_draw = 1.0;
  }
}

}  // namespace

void selective_scan_ref_fwd(const SelectiveScanRefInputs& in, double* out, double* ht) {
  const int64_t B = in.B, T = in.T, D = in.D, N = in.N;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      std::vector<double> h(N, 0.0);
      if (in.h0)
        for (int64_t n = 0; n < N; ++n) h[n] = in.h0[(b * D + d) * N + n];
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * D + d;
        double dt, unused;
        step_size(in, i, d, &dt, &unused);
        double y = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(dt * in.A[d * N + n]) * h[n] + dt * in.Bm[(b * T + t) * N + n] * in.u[i];
          y += in.Cm[(b * T + t) * N + n] * h[n];
        }
        if (in.Dskip) y += in.Dskip[d] * in.u[i];
        if (in.z) y *= in.z[i] * sigmoid(in.z[i]);
        out[i] = y;
      }
      if (ht)
        for (int64_t n = 0; n < N; ++n) ht[(b * D + d) * N + n] = h[n];
    }
}

void selective_scan_ref_bwd(const SelectiveScanRefInputs& in, const double* dout, const double* dht, double* du,
                            double* ddelta, double* dA, double* dBm, double* dCm, double* dDskip, double* dz,
                            double* ddelta_bias, double* dh0) {
  const int64_t B = in.B, T = in.T, D = in.D, N = in.N;
  std::vector<double> gA(D * N, 0.0), gB(B * T * N, 0.0), gC(B * T * N, 0.0), gD(D, 0.0), gbias(D, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      // Forward, keeping every state: hs[t + 1] = h_t, hs[0] = h0.
      std::vector<double> hs((T + 1) * N, 0.0);
      if (in.h0)
        for (int64_t n = 0; n < N; ++n) hs[n] = in.h0[(b * D + d) * N + n];
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * D + d;
        double dt, unused;
        step_size(in, i, d, &dt, &unused);
        for (int64_t n = 0; n < N; ++n)
          hs[(t + 1) * N + n] = std::exp(dt * in.A[d * N + n]) * hs[t * N + n] +
                                dt * in.Bm[(b * T + t) * N + n] * in.u[i];
      }
      // Reverse: dh = dL/dh_t.
      std::vector<double> dh(N, 0.0);
      if (dht)
        for (int64_t n = 0; n < N; ++n) dh[n] = dht[(b * D + d) * N + n];
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t i = (b * T + t) * D + d;
        double dt, ddt_draw;
        step_size(in, i, d, &dt, &ddt_draw);
        const double* h = &hs[(t + 1) * N];
        const double* hprev = &hs[t * N];
        double y = 0.0;
        for (int64_t n = 0; n < N; ++n) y += in.Cm[(b * T + t) * N + n] * h[n];
        if (in.Dskip) y += in.Dskip[d] * in.u[i];
        double dy = dout[i];
        if (in.z) {
          const double s = sigmoid(in.z[i]);
          if (dz) dz[i] = dout[i] * y * s * (1.0 + in.z[i] * (1.0 - s));
          dy = dout[i] * in.z[i] * s;
        }
        double g_u = in.Dskip ? dy * in.Dskip[d] : 0.0;
        if (in.Dskip) gD[d] += dy * in.u[i];
        double g_dt = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          const int64_t bn = (b * T + t) * N + n;
          gC[bn] += dy * h[n];
          dh[n] += dy * in.Cm[bn];
          const double a = std::exp(dt * in.A[d * N + n]);
          // h_t = a h_{t-1} + dt Bm u, a = exp(dt A)
          gA[d * N + n] += dh[n] * hprev[n] * a * dt;
          g_dt += dh[n] * (hprev[n] * a * in.A[d * N + n] + in.Bm[bn] * in.u[i]);
          g_u += dh[n] * dt * in.Bm[bn];
          gB[bn] += dh[n] * dt * in.u[i];
          dh[n] *= a;
        }
        if (du) du[i] = g_u;
        if (ddelta) ddelta[i] = g_dt * ddt_draw;
        gbias[d] += g_dt * ddt_draw;
      }
      if (dh0)
        for (int64_t n = 0; n < N; ++n) dh0[(b * D + d) * N + n] = dh[n];
    }
  if (dA) std::copy(gA.begin(), gA.end(), dA);
  if (dBm) std::copy(gB.begin(), gB.end(), dBm);
  if (dCm) std::copy(gC.begin(), gC.end(), dCm);
  if (dDskip) std::copy(gD.begin(), gD.end(), dDskip);
  if (ddelta_bias) std::copy(gbias.begin(), gbias.end(), ddelta_bias);
}

void hgrn_ref_fwd(const double* x, const double* g, const double* h0, double* o, double* ht, int64_t B, int64_t T,
                  int64_t D) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      double h = h0 ? h0[b * D + d] : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * D + d;
        h = std::exp(g[i]) * h + x[i];
        o[i] = h;
      }
      if (ht) ht[b * D + d] = h;
    }
}

void hgrn_ref_bwd(const double* x, const double* g, const double* h0, const double* do_, const double* dht,
                  double* dx, double* dg, double* dh0, int64_t B, int64_t T, int64_t D) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      std::vector<double> hs(T + 1);  // hs[t + 1] = h_t
      hs[0] = h0 ? h0[b * D + d] : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * D + d;
        hs[t + 1] = std::exp(g[i]) * hs[t] + x[i];
      }
      double dh = dht ? dht[b * D + d] : 0.0;
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t i = (b * T + t) * D + d;
        dh += do_[i];
        dx[i] = dh;
        dg[i] = dh * std::exp(g[i]) * hs[t];
        dh *= std::exp(g[i]);
      }
      if (dh0) dh0[b * D + d] = dh;
    }
}

namespace {

// LayerNorm over D values: x_hat and the standard deviation sqrt(var + eps) (biased variance).
void layer_norm(const double* z, int64_t D, double eps, double* x_hat, double* sd) {
  double mu = 0.0;
  for (int64_t c = 0; c < D; ++c) mu += z[c];
  mu /= D;
  double var = 0.0;
  for (int64_t c = 0; c < D; ++c) var += (z[c] - mu) * (z[c] - mu);
  var /= D;
  *sd = std::sqrt(var + eps);
  for (int64_t c = 0; c < D; ++c) x_hat[c] = (z[c] - mu) / *sd;
}

}  // namespace

void ttt_linear_ref_fwd(const TttLinearRefInputs& in, double* out, double* W_out, double* b_out) {
  const int64_t B = in.B, T = in.T, H = in.H, D = in.D, M = in.mini_batch;
  auto row = [&](const double* x, int64_t b, int64_t t, int64_t h) { return x + ((b * T + t) * H + h) * D; };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const double* gamma = in.ln_gamma + h * D;
      const double* beta = in.ln_beta + h * D;
      std::vector<double> W(in.W0 + (b * H + h) * D * D, in.W0 + (b * H + h + 1) * D * D);
      std::vector<double> bias(in.b0 + (b * H + h) * D, in.b0 + (b * H + h + 1) * D);
      std::vector<double> z(D), xh(D), Wi(D * D), bi(D);
      for (int64_t s = 0; s < T; s += M) {
        const int64_t m = std::min(M, T - s);
        // Gradients of the inner reconstruction loss, all at the mini-batch's starting weights.
        std::vector<double> G(m * D);
        for (int64_t j = 0; j < m; ++j) {
          const double* k = row(in.xk, b, s + j, h);
          const double* v = row(in.xv, b, s + j, h);
          for (int64_t c = 0; c < D; ++c) {
            z[c] = bias[c];
            for (int64_t a = 0; a < D; ++a) z[c] += k[a] * W[a * D + c];
          }
          double sd;
          layer_norm(z.data(), D, in.eps, xh.data(), &sd);
          // d/dz 0.5 ||gamma x_hat + beta - target||^2 through the LayerNorm.
          std::vector<double> gxh(D);
          double mean_g = 0.0, mean_gx = 0.0;
          for (int64_t c = 0; c < D; ++c) {
            gxh[c] = (gamma[c] * xh[c] + beta[c] - (v[c] - k[c])) * gamma[c];
            mean_g += gxh[c] / D;
            mean_gx += gxh[c] * xh[c] / D;
          }
          for (int64_t c = 0; c < D; ++c) G[j * D + c] = (gxh[c] - mean_g - xh[c] * mean_gx) / sd;
        }
        for (int64_t i = 0; i < m; ++i) {
          const double te = in.token_eta ? in.token_eta[i] : 1.0 / (i + 1);
          Wi = W;
          bi = bias;
          for (int64_t j = 0; j <= i; ++j) {
            const double eta_ij = te * in.eta[(b * T + s + j) * H + h];
            const double* k = row(in.xk, b, s + j, h);
            for (int64_t a = 0; a < D; ++a)
              for (int64_t c = 0; c < D; ++c) Wi[a * D + c] -= eta_ij * k[a] * G[j * D + c];
            for (int64_t c = 0; c < D; ++c) bi[c] -= eta_ij * G[j * D + c];
          }
          const double* q = row(in.xq, b, s + i, h);
          for (int64_t c = 0; c < D; ++c) {
            z[c] = bi[c];
            for (int64_t a = 0; a < D; ++a) z[c] += q[a] * Wi[a * D + c];
          }
          double sd;
          layer_norm(z.data(), D, in.eps, xh.data(), &sd);
          double* o = out + ((b * T + s + i) * H + h) * D;
          for (int64_t c = 0; c < D; ++c) o[c] = q[c] + gamma[c] * xh[c] + beta[c];
        }
        W = Wi;  // W_{m-1}, b_{m-1}: the last token's weights start the next mini-batch
        bias = bi;
      }
      if (W_out) std::copy(W.begin(), W.end(), W_out + (b * H + h) * D * D);
      if (b_out) std::copy(bias.begin(), bias.end(), b_out + (b * H + h) * D);
    }
}

}  // namespace sw::kernels::ref
