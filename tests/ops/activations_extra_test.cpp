// relu_ against a naive reference: every value, the special ones, and the thread split.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/ops.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

using test::random_tensor;

float relu_ref(float x) { return std::isnan(x) || x >= 0.f ? x : 0.f; }

// Bitwise comparison, so NaN must stay NaN and nothing is "close enough".
::testing::AssertionResult matches_naive_relu(const Tensor& in, const Tensor& out) {
  for (int64_t i = 0; i < in.numel(); ++i) {
    const float expected = relu_ref(in.data()[i]), got = out.data()[i];
    const bool same = std::isnan(expected) ? std::isnan(got) : got == expected;
    if (!same)
      return ::testing::AssertionFailure() << "element " << i << ": relu(" << in.data()[i] << ") gave " << got
                                           << ", expected " << expected;
  }
  return ::testing::AssertionSuccess();
}

TEST(Relu, MatchesNaiveReferenceIncludingSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  // No subnormals: whether they count as zero depends on the thread's DAZ flag (see
  // enable_flush_denormals), not on relu_.
  std::vector<float> values = {0.f, -0.f, 1.f, -1.f, 2e-38f, -2e-38f, 3e38f, -3e38f, inf, -inf, nan};
  const Tensor random = random_tensor({1001}, 71, -5.f, 5.f);  // odd count: the vector loop's remainder runs
  values.insert(values.end(), random.data(), random.data() + random.numel());
  const Tensor x = Tensor::from({static_cast<int64_t>(values.size())}, values.data());
  Tensor y = x.clone();
  relu_(y);
  EXPECT_TRUE(matches_naive_relu(x, y));
  // A sanity check that the test can fail: the input itself has negatives the reference zeroes.
  EXPECT_FALSE(matches_naive_relu(x, x));
}

TEST(Relu, LargeNhwcTensorsSplitOverThreadsGiveTheSameValues) {
  const Tensor x = random_tensor({2, 67, 129, 16}, 72, -3.f, 3.f);  // several threads' slices, odd lengths
  Tensor y = x.clone();
  relu_(y);
  EXPECT_TRUE(matches_naive_relu(x, y));
}

TEST(Relu, EmptyTensorIsANoOp) {
  Tensor empty = Tensor::zeros({0, 4});
  EXPECT_NO_THROW(relu_(empty));
}

}  // namespace
}  // namespace lcmd::ops
