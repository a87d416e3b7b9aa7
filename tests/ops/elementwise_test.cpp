// Activations, GEGLU, upsampling, additions and concatenation against double references.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include "ops/ops.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

using test::elementwise_close;
using test::random_tensor;

double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }
// As in PyTorch, 1.702 x is a float product; for x near -10 its rounding alone moves the
// result by ~1e-6 relative, so the reference rounds it the same way.
double quick_gelu_ref(double x) {
  const double kx = 1.702f * static_cast<float>(x);
  return x / (1.0 + std::exp(-kx));
}
double gelu_ref(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }

// A dense grid over [-lo, hi] plus values where the approximations switch branches or
// leave the float range, in an odd count so the vector loops have a remainder.
Tensor activation_inputs() {
  std::vector<float> values;
  for (int i = -40000; i <= 40000; ++i) values.push_back(static_cast<float>(i) * 5e-4f);  // [-20, 20]
  for (float special : {0.f, -0.f, 1.f, -1.f, 1.4142135f, -1.4142135f, 60.f, -60.f, 87.f, -87.f, 88.5f, -88.5f,
                        89.f, -89.f, 100.f, -100.f, 1e-30f, -1e-30f, 3e30f, -3e30f})
    values.push_back(special);
  const Tensor random = random_tensor({1001}, 61, -8.f, 8.f);
  values.insert(values.end(), random.data(), random.data() + random.numel());
  return Tensor::from({static_cast<int64_t>(values.size())}, values.data());
}

std::vector<double> apply(const Tensor& x, const std::function<double(double)>& f) {
  std::vector<double> y(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) y[i] = f(x.data()[i]);
  return y;
}

TEST(Activations, SiluMatchesDouble) {
  const Tensor x = activation_inputs();
  Tensor y = x.clone();
  silu_(y);
  EXPECT_TRUE(elementwise_close(y, apply(x, silu_ref), 5e-7, 1e-30));
}

TEST(Activations, QuickGeluMatchesDouble) {
  const Tensor x = activation_inputs();
  Tensor y = x.clone();
  quick_gelu_(y);
  EXPECT_TRUE(elementwise_close(y, apply(x, quick_gelu_ref), 5e-7, 1e-30));
}

TEST(Activations, GeluErfMatchesDouble) {
  const Tensor x = activation_inputs();
  Tensor y = x.clone();
  gelu_erf_(y);
  // Relative 1e-6 down to gelu(-5) = -1.4e-6; deeper in the tail the values are below 1e-12.
  EXPECT_TRUE(elementwise_close(y, apply(x, gelu_ref), 1e-6, 1e-12));
}

TEST(Activations, LargeTensorsAreSplitOverThreadsLikeSmallOnes) {
  const Tensor x = random_tensor({3, 200001}, 62, -6.f, 6.f);  // several slices, odd length
  Tensor y = x.clone();
  silu_(y);
  for (int64_t i = 0; i < x.numel(); i += 997) {
    Tensor one = Tensor::from({1}, x.data() + i);
    silu_(one);
    ASSERT_EQ(one.data()[0], y.data()[i]) << i;
  }
}

TEST(Geglu, ValueTimesGeluOfGate) {
  const Tensor x = random_tensor({2, 37, 2 * 20}, 63, -4.f, 4.f);
  const Tensor y = geglu(x);
  ASSERT_EQ(y.shape(), (Shape{2, 37, 20}));
  std::vector<double> ref(y.numel());
  for (int64_t r = 0; r < 2 * 37; ++r)
    for (int64_t f = 0; f < 20; ++f)
      ref[r * 20 + f] = static_cast<double>(x.data()[r * 40 + f]) * gelu_ref(x.data()[r * 40 + 20 + f]);
  EXPECT_TRUE(elementwise_close(y, ref, 2e-6, 1e-12));
  EXPECT_THROW(geglu(Tensor::zeros({2, 5})), std::invalid_argument);
}

TEST(Upsample, NearestDoublesEachPixel) {
  const Tensor x = random_tensor({2, 3, 5, 7}, 64);
  const Tensor y = upsample_nearest2x(x);
  ASSERT_EQ(y.shape(), (Shape{2, 6, 10, 7}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t h = 0; h < 6; ++h)
      for (int64_t w = 0; w < 10; ++w)
        for (int64_t c = 0; c < 7; ++c)
          ASSERT_EQ(y.data()[((n * 6 + h) * 10 + w) * 7 + c], x.data()[((n * 3 + h / 2) * 5 + w / 2) * 7 + c])
              << n << " " << h << " " << w << " " << c;
  EXPECT_THROW(upsample_nearest2x(Tensor::zeros({3, 5, 7})), std::invalid_argument);
}

TEST(Add, OutOfPlaceAndInPlace) {
  const Tensor a = random_tensor({3, 11, 13}, 65), b = random_tensor({3, 11, 13}, 66);
  const Tensor sum = add(a, b);
  Tensor acc = a.clone();
  add_(acc, b);
  for (int64_t i = 0; i < a.numel(); ++i) {
    ASSERT_EQ(sum.data()[i], a.data()[i] + b.data()[i]) << i;
    ASSERT_EQ(acc.data()[i], a.data()[i] + b.data()[i]) << i;
  }
  Tensor wrong = Tensor::zeros({3, 13, 11});
  EXPECT_THROW(add(a, wrong), std::invalid_argument);
  EXPECT_THROW(add_(wrong, a), std::invalid_argument);
}

TEST(Add, LargeTensorsMatchElementByElement) {
  const Tensor a = random_tensor({1, 64, 64, 33}, 67), b = random_tensor({1, 64, 64, 33}, 68);
  const Tensor sum = add(a, b);
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(sum.data()[i], a.data()[i] + b.data()[i]) << i;
}

TEST(Concat, ChannelsOfAThenB) {
  const Tensor a = random_tensor({2, 3, 4, 5}, 69), b = random_tensor({2, 3, 4, 2}, 70);
  const Tensor y = concat_channels(a, b);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4, 7}));
  for (int64_t p = 0; p < 24; ++p) {
    for (int64_t c = 0; c < 5; ++c) ASSERT_EQ(y.data()[p * 7 + c], a.data()[p * 5 + c]);
    for (int64_t c = 0; c < 2; ++c) ASSERT_EQ(y.data()[p * 7 + 5 + c], b.data()[p * 2 + c]);
  }
  EXPECT_THROW(concat_channels(a, Tensor::zeros({2, 3, 5, 2})), std::invalid_argument);
  EXPECT_THROW(concat_channels(a, Tensor::zeros({2, 3, 4})), std::invalid_argument);
}

}  // namespace
}  // namespace lcmd::ops
