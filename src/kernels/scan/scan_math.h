// Scalar math for the scan kernels, written so that GCC vectorises loops that call it.
//
// glibc's expf/log1pf are only vectorised under -ffast-math, and the scans evaluate one exp per
// (token, channel, state) element, so a scalar libm call would dominate their cost. These are
// Cephes-style range reduction + polynomial versions (max relative error ~2e-7 over their domain),
// branch-free so that loops over them if-convert. Private to src/kernels/scan.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace sw::kernels::scan::detail {

// e^x. Returns 0 below about -87.7 (where e^x would be subnormal) and saturates at e^88.3 above.
[[gnu::always_inline]] inline float exp_approx(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so that n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  x = x < -88.f ? -88.f : x;
  x = x > 88.3f ? 88.3f : x;
  const float n = std::fma(x, kLog2e, kRound) - kRound;  // in [-127, 127]
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r) + 1.f;
  // 2^n from its exponent bits; n = -127 gives the bit pattern of +0, so underflow returns 0 with
  // no select (a select here stops GCC from vectorising loops that feed the result into a log).
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

// ln x for finite x > 0 (no checks: callers pass values >= 1).
[[gnu::always_inline]] inline float log_approx(float x) {
  constexpr float kSqrtHalf = 0.707106781186547524f;
  const int32_t bits = std::bit_cast<int32_t>(x);
  float e = static_cast<float>((bits >> 23) - 126);                        // x = m * 2^e, m in [0.5, 1)
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f000000);
  const bool small = m < kSqrtHalf;  // move m to [sqrt(1/2), sqrt(2)) so that m - 1 is small
  e = small ? e - 1.f : e;
  m = small ? m + m - 1.f : m - 1.f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = std::fma(y, m, -1.1514610310e-1f);
  y = std::fma(y, m, 1.1676998740e-1f);
  y = std::fma(y, m, -1.2420140846e-1f);
  y = std::fma(y, m, 1.4249322787e-1f);
  y = std::fma(y, m, -1.6668057665e-1f);
  y = std::fma(y, m, 2.0000714765e-1f);
  y = std::fma(y, m, -2.4999993993e-1f);
  y = std::fma(y, m, 3.3333331174e-1f);
  y = y * m * z;
  y = std::fma(e, -2.12194440e-4f, y);
  y = std::fma(z, -0.5f, y);
  return std::fma(e, 0.693359375f, m + y);
}

// softplus with torch's threshold: x for x > 20, else log(1 + e^x) (computed as
// max(x, 0) + log1p(e^-|x|), with log1p(w) = log(u) * w / (u - 1), u = 1 + w, which stays accurate
// for tiny w).
[[gnu::always_inline]] inline float softplus_approx(float x) {
  const float ax = x < 0.f ? -x : x;
  const float w = exp_approx(-ax);
  const float u = 1.f + w;
  const float um1 = u - 1.f;
  const float lu = log_approx(u);  // evaluated unconditionally so the selects below if-convert
  const float ratio = w / (um1 == 0.f ? 1.f : um1);
  const float l1p = um1 == 0.f ? w : lu * ratio;
  const float sp = (x > 0.f ? x : 0.f) + l1p;
  return x > 20.f ? x : sp;
}

// 1 / (1 + e^-x) (the derivative of softplus; it rounds to 1 well before softplus's threshold).
[[gnu::always_inline]] inline float sigmoid_approx(float x) { return 1.f / (1.f + exp_approx(-x)); }

}  // namespace sw::kernels::scan::detail
