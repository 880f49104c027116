// Shared helpers for the tests: seeded random data and closeness checks that report where and by
// how much two arrays differ.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace sw::testing {

// Uniform values in [lo, hi), reproducible from the seed.
inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<double> to_f64(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Passes when |a - b| <= atol + rtol * |b| elementwise; on failure names the first and worst index.
template <class A, class B>
::testing::AssertionResult all_close(const A* a, const B* b, size_t n, double atol, double rtol) {
  size_t bad = 0, worst = 0, first = n;
  double worst_excess = 0;
  for (size_t i = 0; i < n; ++i) {
    double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    double tol = atol + rtol * std::fabs(y);
    double err = std::fabs(x - y);
    if (!(err <= tol)) {  // also catches NaN
      if (first == n) first = i;
      ++bad;
      double excess = std::isfinite(err) ? err - tol : INFINITY;
      if (excess >= worst_excess) { worst_excess = excess; worst = i; }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << n << " elements differ (atol " << atol << ", rtol " << rtol << "); first at "
         << first << ": " << static_cast<double>(a[first]) << " vs " << static_cast<double>(b[first])
         << "; worst at " << worst << ": " << static_cast<double>(a[worst]) << " vs "
         << static_cast<double>(b[worst]);
}

template <class A, class B>
::testing::AssertionResult all_close(const std::vector<A>& a, const std::vector<B>& b, double atol, double rtol) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  return all_close(a.data(), b.data(), a.size(), atol, rtol);
}

}  // namespace sw::testing
