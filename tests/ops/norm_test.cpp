// GroupNorm and LayerNorm against double-precision two-pass references.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <stdexcept>
#include <vector>

#include "ops/ops.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

using test::elementwise_close;
using test::random_tensor;
using test::random_vector;

double silu(double v) { return v / (1.0 + std::exp(-v)); }

std::vector<double> group_norm_reference(const Tensor& x, int groups, double eps, const float* gamma,
                                         const float* beta, bool with_silu) {
  const int64_t batch = x.dim(0), channels = x.dim(-1), positions = x.numel() / (batch * channels);
  const int64_t group_size = channels / groups;
  std::vector<double> y(x.numel());
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t g = 0; g < groups; ++g) {
      auto at = [&](int64_t p, int64_t c) { return static_cast<double>(x.data()[(n * positions + p) * channels + c]); };
      double mean = 0, var = 0;
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) mean += at(p, c);
      mean /= static_cast<double>(positions * group_size);
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) var += (at(p, c) - mean) * (at(p, c) - mean);
      var /= static_cast<double>(positions * group_size);
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) {
          const double v = (at(p, c) - mean) / std::sqrt(var + eps) * gamma[c] + beta[c];
          y[(n * positions + p) * channels + c] = with_silu ? silu(v) : v;
        }
    }
  return y;
}

struct GroupNormCase {
  Shape shape;
  int groups;
  float eps, offset;  // offset: added to the input, to test statistics of off-centre data
  bool silu;
};

void PrintTo(const GroupNormCase& c, std::ostream* os) {
  *os << shape_str(c.shape) << " groups " << c.groups << " eps " << c.eps << " offset " << c.offset << (c.silu ? " silu" : "");
}

class GroupNormAgainstReference : public ::testing::TestWithParam<GroupNormCase> {};

TEST_P(GroupNormAgainstReference, MatchesDoubleTwoPass) {
  const GroupNormCase c = GetParam();
  SCOPED_TRACE(shape_str(c.shape));
  const int64_t channels = c.shape.back();
  const Tensor x = random_tensor(c.shape, 31, c.offset - 1.f, c.offset + 1.f);
  const std::vector<float> gamma = random_vector(channels, 32, 0.5f, 1.5f), beta = random_vector(channels, 33);
  const Tensor y = group_norm(x, c.groups, c.eps, gamma.data(), beta.data(), c.silu);
  ASSERT_EQ(y.shape(), x.shape());
  EXPECT_TRUE(elementwise_close(y, group_norm_reference(x, c.groups, c.eps, gamma.data(), beta.data(), c.silu), 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GroupNormAgainstReference,
                         ::testing::Values(GroupNormCase{{1, 8, 8, 64}, 32, 1e-5f, 0.f, false},
                                           GroupNormCase{{2, 9, 7, 96}, 32, 1e-6f, 0.f, true},      // odd, batch 2
                                           GroupNormCase{{2, 5, 3, 32}, 32, 1e-5f, 0.f, true},      // 1 channel/group
                                           GroupNormCase{{1, 16, 16, 128}, 32, 1e-6f, 50.f, false}, // mean 50, std 0.6
                                           GroupNormCase{{2, 40, 40, 64}, 32, 1e-5f, -3.f, true},   // several slices
                                           GroupNormCase{{2, 77, 64}, 32, 1e-5f, 0.f, false},       // [N, T, C]
                                           GroupNormCase{{3, 1, 1, 64}, 8, 1e-5f, 0.f, false}));    // 1 pixel

TEST(GroupNorm, ConstantGroupGivesBeta) {
  Tensor x({1, 4, 4, 32});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = 7.25f;
  const std::vector<float> gamma(32, 2.f), beta = random_vector(32, 34);
  const Tensor y = group_norm(x, 32, 1e-5f, gamma.data(), beta.data(), false);
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data()[i], beta[i % 32]) << i;
}

TEST(GroupNorm, BadArgumentsThrow) {
  const std::vector<float> gamma(30, 1.f), beta(30, 0.f);
  EXPECT_THROW(group_norm(Tensor::zeros({1, 2, 2, 30}), 32, 1e-5f, gamma.data(), beta.data(), false), std::invalid_argument);
  EXPECT_THROW(group_norm(Tensor::zeros({30}), 1, 1e-5f, gamma.data(), beta.data(), false), std::invalid_argument);
  EXPECT_THROW(group_norm(Tensor::zeros({1, 30}), 0, 1e-5f, gamma.data(), beta.data(), false), std::invalid_argument);
}

std::vector<double> layer_norm_reference(const Tensor& x, double eps, const float* gamma, const float* beta) {
  const int64_t channels = x.dim(-1), rows = x.numel() / channels;
  std::vector<double> y(x.numel());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * channels;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < channels; ++c) mean += row[c];
    mean /= static_cast<double>(channels);
    for (int64_t c = 0; c < channels; ++c) var += (row[c] - mean) * (row[c] - mean);
    var /= static_cast<double>(channels);
    for (int64_t c = 0; c < channels; ++c) y[r * channels + c] = (row[c] - mean) / std::sqrt(var + eps) * gamma[c] + beta[c];
  }
  return y;
}

TEST(LayerNorm, MatchesDoubleTwoPass) {
  struct Case {
    Shape shape;
    float offset;
  };
  for (const Case& c : {Case{{2, 77, 768}, 0.f}, Case{{1, 64, 320}, 0.f}, Case{{2, 33, 16}, 0.f},
                        Case{{1, 5, 1280}, 20.f}, Case{{3, 1}, 0.f}, Case{{4096, 40}, -2.f}}) {
    SCOPED_TRACE(shape_str(c.shape));
    const int64_t channels = c.shape.back();
    const Tensor x = random_tensor(c.shape, 41, c.offset - 1.f, c.offset + 1.f);
    const std::vector<float> gamma = random_vector(channels, 42, 0.5f, 1.5f), beta = random_vector(channels, 43);
    const Tensor y = layer_norm(x, 1e-5f, gamma.data(), beta.data());
    ASSERT_EQ(y.shape(), x.shape());
    EXPECT_TRUE(elementwise_close(y, layer_norm_reference(x, 1e-5, gamma.data(), beta.data()), 1e-6, 1e-6));
  }
}

TEST(LayerNorm, BadArgumentsThrow) {
  const std::vector<float> gamma(4, 1.f), beta(4, 0.f);
  EXPECT_THROW(layer_norm(Tensor::zeros({3, 0}), 1e-5f, gamma.data(), beta.data()), std::invalid_argument);
  EXPECT_THROW(layer_norm(Tensor::zeros({3, 4}), -1.f, gamma.data(), beta.data()), std::invalid_argument);
}

}  // namespace
}  // namespace lcmd::ops
