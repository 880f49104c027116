#include "kernels/ref/basic_ref.h"

#include <algorithm>
#include <cmath>

namespace sw::kernels::ref {

static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

Vec unary(Unary op, const Vec& x) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double v = x[i];
    switch (op) {
      case Unary::silu: y[i] = v * sigmoid(v); break;
      case Unary::gelu: y[i] = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); break;
      case Unary::sigmoid: y[i] = sigmoid(v); break;
      case Unary::softplus: y[i] = std::log1p(std::exp(v)); break;
      case Unary::exp: y[i] = std::exp(v); break;
      case Unary::log: y[i] = std::log(v); break;
      case Unary::relu: y[i] = v > 0 ? v : 0; break;
      case Unary::square: y[i] = v * v; break;
    }
  }
  return y;
}

Vec swiglu(const Vec& gate, const Vec& up) {
  Vec y(gate.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = gate[i] * sigmoid(gate[i]) * up[i];
  return y;
}

Vec matmul(const Vec& a, const Vec& b, int64_t m, int64_t n, int64_t k, bool trans_b) {
  Vec c(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += a[i * k + p] * (trans_b ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = s;
    }
  return c;
}

Vec rmsnorm(const Vec& x, const Vec* w, int64_t rows, int64_t dim, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += x[r * dim + j] * x[r * dim + j];
    double rs = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t j = 0; j < dim; ++j) y[r * dim + j] = x[r * dim + j] * rs * (w ? (*w)[j] : 1.0);
  }
  return y;
}

Vec layernorm(const Vec& x, const Vec* w, const Vec* b, int64_t rows, int64_t dim, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < dim; ++j) mu += x[r * dim + j];
    mu /= dim;
    for (int64_t j = 0; j < dim; ++j) var += (x[r * dim + j] - mu) * (x[r * dim + j] - mu);
    double rs = 1.0 / std::sqrt(var / dim + eps);
    for (int64_t j = 0; j < dim; ++j)
      y[r * dim + j] = (x[r * dim + j] - mu) * rs * (w ? (*w)[j] : 1.0) + (b ? (*b)[j] : 0.0);
  }
  return y;
}

Vec l2norm(const Vec& x, int64_t rows, int64_t dim, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += x[r * dim + j] * x[r * dim + j];
    for (int64_t j = 0; j < dim; ++j) y[r * dim + j] = x[r * dim + j] / std::sqrt(ss + eps);
  }
  return y;
}

Vec softmax(const Vec& x, int64_t rows, int64_t dim) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < dim; ++j) m = std::max(m, x[r * dim + j]);
    for (int64_t j = 0; j < dim; ++j) s += std::exp(x[r * dim + j] - m);
    for (int64_t j = 0; j < dim; ++j) y[r * dim + j] = std::exp(x[r * dim + j] - m) / s;
  }
  return y;
}

Vec log_softmax(const Vec& x, int64_t rows, int64_t dim) {
  Vec y = softmax(x, rows, dim);
  for (double& v : y) v = std::log(v);
  return y;
}

Vec rope(const Vec& x, const std::vector<int32_t>& pos, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
         int64_t rotary_dim, double base) {
  Vec y = x;
  int64_t half = rotary_dim / 2;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < half; ++i) {
          double ang = pos[t] * std::pow(base, -2.0 * i / rotary_dim);
          int64_t o = ((b * seq + t) * heads + h) * head_dim;
          double x1 = x[o + i], x2 = x[o + i + half];
          y[o + i] = x1 * std::cos(ang) - x2 * std::sin(ang);
          y[o + i + half] = x2 * std::cos(ang) + x1 * std::sin(ang);
        }
  return y;
}

Vec causal_conv1d(const Vec& x, const Vec& w, const Vec* bias, const Vec* state0, int64_t batch, int64_t seq,
                  int64_t channels, int64_t width) {
  int64_t hist = width - 1;
  Vec out(batch * seq * channels + batch * hist * channels, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    // xx = concat(state0, x) along time
    std::vector<Vec> xx(hist + seq, Vec(channels, 0.0));
    for (int64_t i = 0; i < hist; ++i)
      for (int64_t c = 0; c < channels; ++c) xx[i][c] = state0 ? (*state0)[(b * hist + i) * channels + c] : 0.0;
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t c = 0; c < channels; ++c) xx[hist + t][c] = x[(b * seq + t) * channels + c];
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t c = 0; c < channels; ++c) {
        double s = bias ? (*bias)[c] : 0.0;
        for (int64_t j = 0; j < width; ++j) s += w[c * width + j] * xx[t + j][c];
        out[(b * seq + t) * channels + c] = s;
      }
    for (int64_t i = 0; i < hist; ++i)
      for (int64_t c = 0; c < channels; ++c)
        out[batch * seq * channels + (b * hist + i) * channels + c] = xx[seq + i][c];
  }
  return out;
}

Vec embedding(const Vec& table, const std::vector<int32_t>& ids, int64_t dim) {
  Vec y(ids.size() * dim);
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t j = 0; j < dim; ++j) y[i * dim + j] = table[ids[i] * dim + j];
  return y;
}

double cross_entropy(const Vec& h, const Vec& w, const std::vector<int32_t>& targets, int64_t n, int64_t dim,
                     int64_t vocab) {
  Vec logits = matmul(h, w, n, vocab, dim, true);
  double total = 0;
  int64_t count = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] < 0) continue;
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < vocab; ++j) m = std::max(m, logits[r * vocab + j]);
    for (int64_t j = 0; j < vocab; ++j) s += std::exp(logits[r * vocab + j] - m);
    total += m + std::log(s) - logits[r * vocab + targets[r]];
    ++count;
  }
  return count ? total / count : 0.0;
}

Vec sum_axis(const Vec& x, int64_t outer, int64_t n, int64_t inner) {
  Vec y(outer * inner, 0.0);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k = 0; k < n; ++k)
      for (int64_t i = 0; i < inner; ++i) y[o * inner + i] += x[(o * n + k) * inner + i];
  return y;
}

Vec cumsum(const Vec& x, int64_t outer, int64_t n, int64_t inner) {
  Vec y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < n; ++k) y[(o * n + k) * inner + i] = acc += x[(o * n + k) * inner + i];
    }
  return y;
}

}  // namespace sw::kernels::ref
