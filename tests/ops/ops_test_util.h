// Helpers of the op tests: seeded random tensors and comparison with double-precision
// reference results.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "support/test_support.h"

namespace lcmd::test {

// Uniform values in [lo, hi), reproducible from the seed.
inline Tensor random_tensor(Shape shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = dist(rng);
  return t;
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = random_tensor({static_cast<int64_t>(n)}, seed, lo, hi);
  return std::vector<float>(t.data(), t.data() + n);
}

// Checks out against a double reference: relative L2 error <= rel and every element within
// abs_frac * max|ref|. Also records the measured errors in the test log.
inline ::testing::AssertionResult matches_reference(const Tensor& out, const std::vector<double>& ref, double rel,
                                                    double abs_frac) {
  if (static_cast<size_t>(out.numel()) != ref.size())
    return ::testing::AssertionFailure() << "output has " << out.numel() << " elements, reference " << ref.size();
  std::vector<float> ref_f(ref.begin(), ref.end());
  const std::string problem = check_close(out.data(), ref_f.data(), ref_f.size(), rel, abs_frac);
  if (!problem.empty()) return ::testing::AssertionFailure() << problem;
  return ::testing::AssertionSuccess();
}

// Every element within rel * |ref| + abs of its reference; reports the worst element.
inline ::testing::AssertionResult elementwise_close(const Tensor& out, const std::vector<double>& ref, double rel,
                                                    double abs) {
  if (static_cast<size_t>(out.numel()) != ref.size())
    return ::testing::AssertionFailure() << "output has " << out.numel() << " elements, reference " << ref.size();
  double worst_excess = 0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::abs(out.data()[i] - ref[i]), bound = rel * std::abs(ref[i]) + abs;
    if (!(err <= bound) && (err - bound > worst_excess || worst_excess == 0)) {
      worst_excess = err - bound;
      worst = i;
    }
  }
  if (worst_excess == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "element " << worst << ": got " << out.data()[worst] << ", reference "
                                       << ref[worst] << " (bound " << rel << " * |ref| + " << abs << ")";
}

}  // namespace lcmd::test
