// Finite differences in double precision and comparisons for the gradient-check tests.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <span>
#include <vector>

namespace lora::test {

inline std::vector<double> random_values(std::size_t n, uint64_t seed, double lo = -1.0,
                                         double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::vector<double> v(n);
  for (double& x : v) x = lo + (hi - lo) * (double(rng() >> 11) * 0x1.0p-53);
  return v;
}

inline std::vector<float> to_float(std::span<const double> v) { return {v.begin(), v.end()}; }

// Central differences of a scalar function of x, in double precision.
inline std::vector<double> numeric_grad(const std::function<double(const std::vector<double>&)>& f,
                                        std::vector<double> x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = f(x);
    x[i] = keep - h;
    const double down = f(x);
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

inline double dot(std::span<const double> a, std::span<const double> b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// max |got - want| relative to the largest |want| (a scale-aware error for a whole gradient).
template <typename A, typename B>
double max_rel_error(std::span<const A> got, std::span<const B> want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, scale = 1e-12;
  for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    err = std::max(err, std::abs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return err / scale;
}

template <typename A, typename B>
double max_rel_error(const std::vector<A>& got, const std::vector<B>& want) {
  return max_rel_error(std::span<const A>(got), std::span<const B>(want));
}

}  // namespace lora::test
