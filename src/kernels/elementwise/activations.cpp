#include "kernels/elementwise/activations.h"

#include <cmath>

namespace sw::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this, a parallel region costs more than it saves

inline float sigmoidf(float x) { return 1.f / (1.f + std::exp(-x)); }
// softplus(x) = log(1 + e^x), written to avoid overflow for large x.
inline float softplusf(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

template <class F>
void map(const float* x, float* y, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class F>
void map_grad(const float* x, const float* dy, float* dx, int64_t n, F df) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * df(x[i]);
}

}  // namespace

const char* unary_name(Unary op) {
  switch (op) {
    case Unary::silu: return "silu";
    case Unary::gelu: return "gelu";
    case Unary::sigmoid: return "sigmoid";
    case Unary::softplus: return "softplus";
    case Unary::exp: return "exp";
    case Unary::log: return "log";
    case Unary::relu: return "relu";
    case Unary::square: return "square";
  }
  return "?";
}

void unary_fwd(Unary op, const float* x, float* y, int64_t n) {
  switch (op) {
    case Unary::silu: map(x, y, n, [](float v) { return v * sigmoidf(v); }); break;
    case Unary::gelu: map(x, y, n, [](float v) { return 0.5f * v * (1.f + std::erf(v * kInvSqrt2)); }); break;
    case Unary::sigmoid: map(x, y, n, [](float v) { return sigmoidf(v); }); break;
    case Unary::softplus: map(x, y, n, [](float v) { return softplusf(v); }); break;
    case Unary::exp: map(x, y, n, [](float v) { return std::exp(v); }); break;
    case Unary::log: map(x, y, n, [](float v) { return std::log(v); }); break;
    case Unary::relu: map(x, y, n, [](float v) { return v > 0.f ? v : 0.f; }); break;
    case Unary::square: map(x, y, n, [](float v) { return v * v; }); break;
  }
}

void unary_bwd(Unary op, const float* x, const float* dy, float* dx, int64_t n) {
  switch (op) {
    case Unary::silu:
      map_grad(x, dy, dx, n, [](float v) {
        float s = sigmoidf(v);
        return s * (1.f + v * (1.f - s));
      });
      break;
    case Unary::gelu:
      map_grad(x, dy, dx, n, [](float v) {
        return 0.5f * (1.f + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5f * v * v);
      });
      break;
    case Unary::sigmoid:
      map_grad(x, dy, dx, n, [](float v) {
        float s = sigmoidf(v);
        return s * (1.f - s);
      });
      break;
    case Unary::softplus: map_grad(x, dy, dx, n, [](float v) { return sigmoidf(v); }); break;
    case Unary::exp: map_grad(x, dy, dx, n, [](float v) { return std::exp(v); }); break;
    case Unary::log: map_grad(x, dy, dx, n, [](float v) { return 1.f / v; }); break;
    case Unary::relu: map_grad(x, dy, dx, n, [](float v) { return v > 0.f ? 1.f : 0.f; }); break;
    case Unary::square: map_grad(x, dy, dx, n, [](float v) { return 2.f * v; }); break;
  }
}

void swiglu_fwd(const float* gate, const float* up, float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

void swiglu_bwd(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i], s = sigmoidf(g);
    dup[i] = dy[i] * g * s;
    dgate[i] = dy[i] * up[i] * s * (1.f + g * (1.f - s));
  }
}

}  // namespace sw::kernels
