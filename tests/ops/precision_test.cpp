// Conv2d and Linear at each precision (fp32 incl. Winograd, bf16, int8) against naive
// double-precision loops, on inputs with the magnitudes of a real network: activations
// ~N(0, 1) (as after GroupNorm / LayerNorm), weights and biases uniform in +-1/sqrt(fan_in)
// (PyTorch's default init), residuals ~N(0, 1).
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ops/conv_banding_impl.h"
#include "ops/ops.h"
#include "ops/quantize_impl.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

// Relative L2 error bounds per precision. fp32 direct and Winograd measure ~1e-6; bf16 about
// 3e-3 (8-bit mantissas of both operands); int8 with per-tensor activation scales about 1e-2
// on normal activations (the scale is set by the largest of them, ~4.5 sigma).
double error_bound(Precision p) {
  switch (p) {
    case Precision::FP32: return 1e-5;
    case Precision::BF16: return 1e-2;
    case Precision::INT8: return 3e-2;
  }
  return 0;
}

// The precision a layer runs at: what the CPU can do, and INT8 requests of thin layers (fewer
// than 16 input or output channels) as BF16.
Precision expected_precision(Precision requested, int in, int out) {
  if (requested == Precision::INT8 && std::min(in, out) < 16) return runnable_precision(Precision::BF16);
  return runnable_precision(requested);
}

// Activations: standard normal; with outliers, every 997th element is 8x larger.
Tensor activations(Shape shape, uint32_t seed, bool outliers = false) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(rng) * (outliers && i % 997 == 13 ? 8.f : 1.f);
  return t;
}

std::vector<float> uniform(size_t n, int64_t fan_in, uint32_t seed) {
  const float bound = 1.f / std::sqrt(static_cast<float>(fan_in));
  return test::random_vector(n, seed, -bound, bound);
}

double relative_l2(const Tensor& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = out.data()[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

struct ConvCase {
  int batch, height, width, cin, cout, kernel, stride, padding;
  bool bias, residual;
  const char* algorithm;  // expected at fp32: "winograd", "direct"
};

std::string case_name(const ConvCase& c) {
  return std::to_string(c.batch) + "x" + std::to_string(c.height) + "x" + std::to_string(c.width) + "x" +
         std::to_string(c.cin) + " -> " + std::to_string(c.cout) + " k" + std::to_string(c.kernel) + " s" +
         std::to_string(c.stride) + " p" + std::to_string(c.padding) + (c.bias ? " bias" : "") +
         (c.residual ? " residual" : "");
}

int out_size(int in, const ConvCase& c) { return (in + 2 * c.padding - c.kernel) / c.stride + 1; }

// NHWC x, PyTorch [cout, cin, k, k] weights, accumulated in double.
std::vector<double> conv_reference(const ConvCase& c, const Tensor& x, const std::vector<float>& w, const float* bias,
                                   const Tensor* residual) {
  const int oh = out_size(c.height, c), ow = out_size(c.width, c);
  std::vector<double> y(static_cast<size_t>(c.batch) * oh * ow * c.cout);
  for (int n = 0; n < c.batch; ++n)
    for (int oy = 0; oy < oh; ++oy)
      for (int ox = 0; ox < ow; ++ox)
        for (int co = 0; co < c.cout; ++co) {
          double acc = bias ? bias[co] : 0.0;
          for (int ky = 0; ky < c.kernel; ++ky)
            for (int kx = 0; kx < c.kernel; ++kx) {
              const int iy = oy * c.stride - c.padding + ky, ix = ox * c.stride - c.padding + kx;
              if (iy < 0 || iy >= c.height || ix < 0 || ix >= c.width) continue;
              const float* px = x.data() + ((static_cast<int64_t>(n) * c.height + iy) * c.width + ix) * c.cin;
              const float* wk = w.data() + static_cast<size_t>(co) * c.cin * c.kernel * c.kernel + ky * c.kernel + kx;
              for (int ci = 0; ci < c.cin; ++ci) acc += static_cast<double>(px[ci]) * wk[ci * c.kernel * c.kernel];
            }
          const size_t i = ((static_cast<size_t>(n) * oh + oy) * ow + ox) * c.cout + co;
          y[i] = acc + (residual ? residual->data()[i] : 0.0);
        }
  return y;
}

struct PrecisionCase {
  Precision precision;
  ConvCase conv;
};

void PrintTo(const PrecisionCase& c, std::ostream* os) { *os << precision_name(c.precision) << " " << case_name(c.conv); }

class ConvPrecision : public ::testing::TestWithParam<PrecisionCase> {};

TEST_P(ConvPrecision, WithinTheBoundOfItsPrecision) {
  const Precision requested = GetParam().precision;
  const ConvCase c = GetParam().conv;
  const int64_t fan_in = static_cast<int64_t>(c.cin) * c.kernel * c.kernel;
  const Tensor x = activations({c.batch, c.height, c.width, c.cin}, 1);
  const std::vector<float> w = uniform(static_cast<size_t>(c.cout) * fan_in, fan_in, 2), b = uniform(c.cout, fan_in, 3);
  const Tensor residual = activations({c.batch, out_size(c.height, c), out_size(c.width, c), c.cout}, 4);
  const Tensor* res = c.residual ? &residual : nullptr;

  const Conv2d conv(w.data(), c.bias ? b.data() : nullptr, c.cin, c.cout, c.kernel, c.stride, c.padding, requested);
  const Precision expected = expected_precision(requested, c.cin, c.cout);
  EXPECT_EQ(conv.precision(), expected);
  const std::string impl = conv.implementation(x.shape());
  EXPECT_EQ(impl.rfind(precision_name(expected), 0), 0u) << impl;
  if (expected == Precision::FP32 && runnable_precision(Precision::BF16) == Precision::BF16)  // an AVX-512 CPU
    EXPECT_NE(impl.find(c.algorithm), std::string::npos) << impl;

  const Tensor y = conv(x, res);
  ASSERT_EQ(y.shape(), (Shape{c.batch, out_size(c.height, c), out_size(c.width, c), c.cout}));
  const double error = relative_l2(y, conv_reference(c, x, w, c.bias ? b.data() : nullptr, res));
  RecordProperty("relative_l2", std::to_string(error));
  EXPECT_LE(error, error_bound(expected)) << impl;
  // The low precisions really ran: their rounding shows (fp32 would be ~1e-6).
  if (expected != Precision::FP32) EXPECT_GT(error, 1e-5) << impl;
  // A second call reuses the cached plan and gives the same bits.
  const Tensor again = conv(x, res);
  EXPECT_EQ(0, std::memcmp(again.data(), y.data(), sizeof(float) * y.numel()));
}

std::vector<PrecisionCase> conv_cases() {
  const std::vector<ConvCase> shapes{
      {1, 32, 32, 64, 64, 3, 1, 1, true, false, "winograd"},     // 64->64@32x32
      {1, 32, 32, 64, 64, 3, 1, 1, true, true, "winograd"},      // + residual
      {1, 16, 16, 320, 320, 3, 1, 1, true, true, "winograd"},    // UNet width, 256 pixels
      {2, 13, 11, 32, 48, 3, 1, 1, true, true, "winograd"},      // odd sizes, batch 2, cin != cout
      {1, 8, 8, 320, 320, 3, 1, 1, true, false, "direct"},       // 64 pixels: direct is faster
      {1, 4, 4, 128, 64, 3, 1, 1, false, true, "direct"},        // tiny, no bias
      {1, 12, 12, 4, 32, 3, 1, 1, true, false, "direct"},        // conv_in: 4 channels
      {1, 12, 10, 32, 3, 3, 1, 1, true, false, "direct"},        // conv_out: 3 channels
      {2, 9, 7, 5, 7, 3, 1, 1, true, true, "direct"},            // odd channels
      {2, 9, 9, 32, 32, 3, 2, 1, true, false, "direct"},         // Downsample2D: stride 2, odd
      {1, 16, 16, 48, 32, 3, 2, 1, true, true, "direct"},        // stride 2 + residual
      {2, 5, 7, 40, 24, 1, 1, 0, true, true, "matmul"},          // 1x1: runs as a Linear
  };
  std::vector<PrecisionCase> cases;
  for (const Precision p : {Precision::FP32, Precision::BF16, Precision::INT8})
    for (const ConvCase& c : shapes) cases.push_back({p, c});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvPrecision, ::testing::ValuesIn(conv_cases()));

std::vector<double> linear_reference(const Tensor& x, const std::vector<float>& w, const float* bias, int out,
                                     const Tensor* residual) {
  const int64_t in = x.dim(-1), rows = x.numel() / in;
  std::vector<double> y(static_cast<size_t>(rows) * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double acc = bias ? bias[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += static_cast<double>(x.data()[r * in + i]) * w[o * in + i];
      y[r * out + o] = acc + (residual ? residual->data()[r * out + o] : 0.0);
    }
  return y;
}

class LinearPrecision : public ::testing::TestWithParam<Precision> {};

TEST_P(LinearPrecision, WithinTheBoundOfItsPrecision) {
  const Precision requested = GetParam();
  struct Shape3 {
    int64_t batch, tokens;
    int in, out;
    bool bias, residual;
  };
  // Attention projections, the text-embedding K/V (77 rows), the time embedding (1 row),
  // GEGLU-like widening, and odd feature counts.
  for (const Shape3 s : {Shape3{1, 256, 320, 320, true, false}, Shape3{1, 77, 768, 320, false, false},
                         Shape3{1, 1, 320, 1280, true, false}, Shape3{1, 64, 320, 2560, true, false},
                         Shape3{2, 37, 1280, 320, true, true}, Shape3{3, 7, 33, 17, true, true},
                         Shape3{2, 9, 40, 4, true, false}}) {  // thin: int8 runs bf16
    SCOPED_TRACE(std::to_string(s.batch) + "x" + std::to_string(s.tokens) + "x" + std::to_string(s.in) + " -> " +
                 std::to_string(s.out));
    const std::vector<float> w = uniform(static_cast<size_t>(s.out) * s.in, s.in, 20), b = uniform(s.out, s.in, 21);
    const Linear linear(w.data(), s.bias ? b.data() : nullptr, s.in, s.out, requested);
    const Precision expected = expected_precision(requested, s.in, s.out);
    EXPECT_EQ(linear.precision(), expected);
    const Tensor x = activations({s.batch, s.tokens, s.in}, 22), residual = activations({s.batch, s.tokens, s.out}, 23);
    const Tensor* res = s.residual ? &residual : nullptr;
    const std::string impl = linear.implementation(s.batch * s.tokens);
    EXPECT_EQ(impl.rfind(precision_name(expected), 0), 0u) << impl;
    const Tensor y = linear(x, res);
    ASSERT_EQ(y.shape(), (Shape{s.batch, s.tokens, s.out}));
    const double error = relative_l2(y, linear_reference(x, w, s.bias ? b.data() : nullptr, s.out, res));
    EXPECT_LE(error, error_bound(expected)) << impl;
    if (expected != Precision::FP32) EXPECT_GT(error, 1e-5) << impl;
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, LinearPrecision,
                         ::testing::Values(Precision::FP32, Precision::BF16, Precision::INT8),
                         [](const auto& info) { return std::string(precision_name(info.param)); });

// BF16 convolutions allowed Winograd F(2x2, 3x3) (Conv3x3Algorithm::kWinograd): within the bf16
// bound of the double loops (measured ~4e-3 against direct bf16's ~2.3e-3), on odd sizes
// (tiles past the edge), batches, residuals, no bias, and in many bands of tile rows; thin
// layers and strided ones run direct.
TEST(Bf16Winograd, WithinTheBf16BoundOnEveryShape) {
  if (runnable_precision(Precision::BF16) != Precision::BF16) GTEST_SKIP() << "this CPU computes bf16 in fp32";
  struct Case {
    ConvCase conv;
    size_t band_bytes;  // 0: the smallest bands (16 tiles)
  };
  const std::vector<Case> cases{
      {{1, 32, 32, 64, 64, 3, 1, 1, true, false, "winograd-f2"}, SIZE_MAX},
      {{2, 13, 11, 32, 48, 3, 1, 1, true, true, "winograd-f2"}, SIZE_MAX},   // odd sizes, batch 2
      {{1, 16, 16, 320, 320, 3, 1, 1, false, true, "winograd-f2"}, SIZE_MAX},  // UNet width, no bias
      {{2, 41, 9, 16, 32, 3, 1, 1, true, true, "winograd-f2"}, 0},            // 5 tiles wide: 7 bands/image
      {{1, 3, 3, 32, 16, 3, 1, 1, true, false, "winograd-f2"}, SIZE_MAX},      // smaller than a band
      {{1, 12, 12, 4, 32, 3, 1, 1, true, false, "direct"}, SIZE_MAX},          // conv_in: thin
      {{1, 12, 10, 32, 3, 3, 1, 1, true, false, "direct"}, SIZE_MAX},          // conv_out: thin
      {{1, 16, 16, 48, 32, 3, 2, 1, true, true, "direct"}, SIZE_MAX},          // stride 2
  };
  for (const Case& k : cases) {
    const ConvCase& c = k.conv;
    SCOPED_TRACE(case_name(c));
    const int64_t fan_in = static_cast<int64_t>(c.cin) * 9;
    const Tensor x = activations({c.batch, c.height, c.width, c.cin}, 70);
    const std::vector<float> w = uniform(static_cast<size_t>(c.cout) * fan_in, fan_in, 71), b = uniform(c.cout, fan_in, 72);
    const Tensor residual = activations({c.batch, out_size(c.height, c), out_size(c.width, c), c.cout}, 73);
    const Tensor* res = c.residual ? &residual : nullptr;
    const size_t saved = detail::winograd_band_budget();
    detail::set_winograd_band_budget(k.band_bytes);
    const Conv2d conv(w.data(), c.bias ? b.data() : nullptr, c.cin, c.cout, 3, c.stride, c.padding, Precision::BF16,
                      Conv3x3Algorithm::kWinograd);
    const Tensor y = conv(x, res), again = conv(x, res);
    detail::set_winograd_band_budget(saved);
    const std::string impl = conv.implementation(x.shape());
    EXPECT_EQ(impl.rfind("bf16 " + std::string(c.algorithm), 0), 0u) << impl;
    ASSERT_EQ(y.shape(), (Shape{c.batch, out_size(c.height, c), out_size(c.width, c), c.cout}));
    const double error = relative_l2(y, conv_reference(c, x, w, c.bias ? b.data() : nullptr, res));
    EXPECT_LE(error, error_bound(Precision::BF16)) << impl;
    EXPECT_GT(error, 1e-5) << impl;
    EXPECT_EQ(0, std::memcmp(again.data(), y.data(), sizeof(float) * y.numel()));
  }
}

// Bands change where the work is cut, not the arithmetic: any band size gives the same bits.
TEST(Bf16Winograd, BandsGiveTheSameBits) {
  if (runnable_precision(Precision::BF16) != Precision::BF16) GTEST_SKIP() << "this CPU computes bf16 in fp32";
  const std::vector<float> w = uniform(48 * 32 * 9, 32 * 9, 74), b = uniform(48, 32 * 9, 75);
  const Tensor x = activations({2, 37, 22, 32}, 76), residual = activations({2, 37, 22, 48}, 77);
  std::vector<Tensor> outputs;
  for (const size_t budget : {SIZE_MAX, size_t{1} << 20, size_t{0}}) {
    const size_t saved = detail::winograd_band_budget();
    detail::set_winograd_band_budget(budget);
    const Conv2d conv(w.data(), b.data(), 32, 48, 3, 1, 1, Precision::BF16, Conv3x3Algorithm::kWinograd);
    outputs.push_back(conv(x, &residual));
    detail::set_winograd_band_budget(saved);
  }
  for (size_t i = 1; i < outputs.size(); ++i)
    EXPECT_EQ(0, std::memcmp(outputs[i].data(), outputs[0].data(), sizeof(float) * outputs[0].numel())) << i;
}

// A NaN in the input is not rounded into a finite or infinite value: the outputs its tiles reach
// are NaN, the others are not.
TEST(Bf16Winograd, NanInputGivesNanOutputsAroundIt) {
  if (runnable_precision(Precision::BF16) != Precision::BF16) GTEST_SKIP() << "this CPU computes bf16 in fp32";
  const std::vector<float> w = uniform(32 * 32 * 9, 32 * 9, 78);
  Tensor x = activations({1, 12, 12, 32}, 79);
  // Pixel (5, 6), channel 3: a NaN whose payload fills the low bits, which a plain round-to-nearest
  // on the bits would carry into the sign (-0).
  x.data()[(5 * 12 + 6) * 32 + 3] = std::bit_cast<float>(0x7fffffffu);
  const Conv2d conv(w.data(), nullptr, 32, 32, 3, 1, 1, Precision::BF16, Conv3x3Algorithm::kWinograd);
  const Tensor y = conv(x);
  EXPECT_TRUE(std::isnan(y.data()[(5 * 12 + 6) * 32]));  // the pixel's own output
  EXPECT_FALSE(std::isnan(y.data()[(0 * 12 + 0) * 32]));  // a tile far from it
  EXPECT_FALSE(std::isnan(y.data()[(11 * 12 + 11) * 32]));
}

// INT8 convolutions allowed Winograd (Conv3x3Algorithm::kWinograd) run F(2x2, 3x3) with int8
// products: within the int8 bound of the double loops on odd sizes, batches, residuals, no
// bias and many bands; thin and strided layers run direct. Inputs with outliers as well: the
// per-point, per-tile-row scales must not let one large value flatten its neighbours.
TEST(Int8Winograd, WithinTheInt8BoundOnEveryShape) {
  if (runnable_precision(Precision::INT8) != Precision::INT8) GTEST_SKIP() << "this CPU has no int8 products";
  struct Case {
    ConvCase conv;
    size_t band_bytes;  // 0: the smallest bands (16 tiles)
    bool outliers;
  };
  const std::vector<Case> cases{
      {{1, 32, 32, 64, 64, 3, 1, 1, true, false, "winograd-f2"}, SIZE_MAX, false},
      {{2, 13, 11, 32, 48, 3, 1, 1, true, true, "winograd-f2"}, SIZE_MAX, false},    // odd sizes, batch 2
      {{1, 16, 16, 512, 512, 3, 1, 1, false, true, "winograd-f2"}, SIZE_MAX, true},  // VAE width, no bias
      {{2, 41, 9, 16, 32, 3, 1, 1, true, true, "winograd-f2"}, 0, true},             // 5 tiles wide: many bands
      {{1, 3, 3, 32, 16, 3, 1, 1, true, false, "winograd-f2"}, SIZE_MAX, false},      // smaller than a band
      {{1, 12, 12, 4, 32, 3, 1, 1, true, false, "direct"}, SIZE_MAX, false},          // thin: runs bf16
      {{1, 16, 16, 48, 32, 3, 2, 1, true, true, "direct"}, SIZE_MAX, false},          // stride 2
  };
  for (const Case& k : cases) {
    const ConvCase& c = k.conv;
    SCOPED_TRACE(case_name(c) + (k.outliers ? " outliers" : ""));
    const int64_t fan_in = static_cast<int64_t>(c.cin) * 9;
    const Tensor x = activations({c.batch, c.height, c.width, c.cin}, 90, k.outliers);
    const std::vector<float> w = uniform(static_cast<size_t>(c.cout) * fan_in, fan_in, 91), b = uniform(c.cout, fan_in, 92);
    const Tensor residual = activations({c.batch, out_size(c.height, c), out_size(c.width, c), c.cout}, 93);
    const Tensor* res = c.residual ? &residual : nullptr;
    const size_t saved = detail::winograd_band_budget();
    detail::set_winograd_band_budget(k.band_bytes);
    const Conv2d conv(w.data(), c.bias ? b.data() : nullptr, c.cin, c.cout, 3, c.stride, c.padding, Precision::INT8,
                      Conv3x3Algorithm::kWinograd);
    const Tensor y = conv(x, res), again = conv(x, res);
    detail::set_winograd_band_budget(saved);
    const Precision expected = expected_precision(Precision::INT8, c.cin, c.cout);
    const std::string impl = conv.implementation(x.shape());
    EXPECT_EQ(impl.rfind(std::string(precision_name(expected)) + " " + c.algorithm, 0), 0u) << impl;
    ASSERT_EQ(y.shape(), (Shape{c.batch, out_size(c.height, c), out_size(c.width, c), c.cout}));
    const double error = relative_l2(y, conv_reference(c, x, w, c.bias ? b.data() : nullptr, res));
    EXPECT_LE(error, error_bound(expected)) << impl;
    EXPECT_GT(error, 1e-5) << impl;
    EXPECT_EQ(0, std::memcmp(again.data(), y.data(), sizeof(float) * y.numel()));
  }
}

// The inputs are quantized per tile row, not per band: neither the band size nor the thread
// count (which sets the band split) changes a bit of the result.
TEST(Int8Winograd, BandsAndThreadCountsGiveTheSameBits) {
  if (runnable_precision(Precision::INT8) != Precision::INT8) GTEST_SKIP() << "this CPU has no int8 products";
  const std::vector<float> w = uniform(48 * 32 * 9, 32 * 9, 94), b = uniform(48, 32 * 9, 95);
  const Tensor x = activations({2, 37, 22, 32}, 96, /*outliers=*/true), residual = activations({2, 37, 22, 48}, 97);
  const int threads = num_threads();
  std::vector<Tensor> outputs;
  for (const int t : {threads, 1, 3})
    for (const size_t budget : {SIZE_MAX, size_t{1} << 20, size_t{0}}) {
      const size_t saved = detail::winograd_band_budget();
      detail::set_winograd_band_budget(budget);
      set_num_threads(t);
      const Conv2d conv(w.data(), b.data(), 32, 48, 3, 1, 1, Precision::INT8, Conv3x3Algorithm::kWinograd);
      outputs.push_back(conv(x, &residual));
      set_num_threads(threads);
      detail::set_winograd_band_budget(saved);
    }
  for (size_t i = 1; i < outputs.size(); ++i)
    EXPECT_EQ(0, std::memcmp(outputs[i].data(), outputs[0].data(), sizeof(float) * outputs[0].numel())) << i;
}

// A NaN in the input makes NaN the outputs of the tile rows it reaches (their quantization
// scales are NaN, as a direct int8 layer's whole output is), and no others: pixel row 5 reaches
// output rows 4 and 5 (tile row 2) and, through the points of its first input row only, row 6
// (tile row 3's upper outputs), as in fp32.
TEST(Int8Winograd, NanInputGivesNanOutputsInItsTileRows) {
  if (runnable_precision(Precision::INT8) != Precision::INT8) GTEST_SKIP() << "this CPU has no int8 products";
  const std::vector<float> w = uniform(32 * 32 * 9, 32 * 9, 98);
  Tensor x = activations({1, 12, 12, 32}, 99);
  x.data()[(5 * 12 + 6) * 32 + 3] = std::numeric_limits<float>::quiet_NaN();  // pixel (5, 6)
  const Conv2d conv(w.data(), nullptr, 32, 32, 3, 1, 1, Precision::INT8, Conv3x3Algorithm::kWinograd);
  const Tensor y = conv(x);
  for (int row = 0; row < 12; ++row) {
    SCOPED_TRACE(row);
    const bool reached = row >= 4 && row <= 6;
    EXPECT_EQ(std::isnan(y.data()[(row * 12 + 0) * 32 + 7]), reached);
    EXPECT_EQ(std::isnan(y.data()[(row * 12 + 11) * 32 + 31]), reached);
  }
}

// Weights with a NaN are refused, naming the output channel, as the direct int8 layer does.
TEST(Int8Winograd, NanWeightIsRefused) {
  if (runnable_precision(Precision::INT8) != Precision::INT8) GTEST_SKIP() << "this CPU has no int8 products";
  std::vector<float> w = uniform(32 * 32 * 9, 32 * 9, 100);
  w[(7 * 32 + 3) * 9 + 4] = std::numeric_limits<float>::quiet_NaN();  // output channel 7
  try {
    const Conv2d conv(w.data(), nullptr, 32, 32, 3, 1, 1, Precision::INT8, Conv3x3Algorithm::kWinograd);
    FAIL() << "accepted a NaN weight";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("output channel 7"), std::string::npos) << e.what();
  }
}

// The same layer called from several threads at once (each with its own shapes, so plans are
// created concurrently too) gives the bits a lone call gives.
TEST(Precision, ConcurrentCallsMatchSerialCalls) {
  for (const Precision p : {Precision::FP32, Precision::BF16, Precision::INT8}) {
    SCOPED_TRACE(precision_name(p));
    const int channels = 64;
    const std::vector<float> w = uniform(channels * channels * 9, channels * 9, 30), b = uniform(channels, 9, 31);
    const Conv2d conv(w.data(), b.data(), channels, channels, 3, 1, 1, p);
    const Linear linear(w.data(), b.data(), channels * 9, channels, p);
    std::vector<Tensor> inputs, serial;
    for (int t = 0; t < 4; ++t) {
      inputs.push_back(activations({1, 8 + 4 * t, 16, channels}, 40 + t));  // 128 to 320 pixels: both algorithms
      serial.push_back(conv(inputs.back()));
    }
    const Tensor rows = activations({50, channels * 9}, 50);
    const Tensor linear_serial = linear(rows);
    std::vector<Tensor> parallel(inputs.size());
    std::vector<Tensor> linear_parallel(inputs.size());
    std::vector<std::thread> threads;
    for (size_t t = 0; t < inputs.size(); ++t)
      threads.emplace_back([&, t] {
        for (int repeat = 0; repeat < 3; ++repeat) {
          parallel[t] = conv(inputs[t]);
          linear_parallel[t] = linear(rows);
        }
      });
    for (std::thread& t : threads) t.join();
    for (size_t t = 0; t < inputs.size(); ++t) {
      EXPECT_EQ(0, std::memcmp(parallel[t].data(), serial[t].data(), sizeof(float) * serial[t].numel())) << t;
      EXPECT_EQ(0, std::memcmp(linear_parallel[t].data(), linear_serial.data(), sizeof(float) * linear_serial.numel()))
          << t;
    }
  }
}

// A layer keeps working for new input shapes after its first call (plans per shape, one set
// of packed weights), at every precision.
TEST(Precision, NewInputShapesReuseTheLayer) {
  for (const Precision p : {Precision::FP32, Precision::BF16, Precision::INT8}) {
    SCOPED_TRACE(precision_name(p));
    const std::vector<float> w = uniform(32 * 32 * 9, 32 * 9, 60), b = uniform(32, 32 * 9, 61);
    const Conv2d conv(w.data(), b.data(), 32, 32, 3, 1, 1, p);
    for (const int size : {4, 40, 1, 17, 4}) {
      SCOPED_TRACE(size);
      const ConvCase c{1, size, size + 1, 32, 32, 3, 1, 1, true, false, ""};
      const Tensor x = activations({1, size, size + 1, 32}, 62);
      EXPECT_LE(relative_l2(conv(x), conv_reference(c, x, w, b.data(), nullptr)), error_bound(conv.precision()));
    }
  }
}

// Outliers stretch int8's per-tensor activation scale: a few 8-sigma values (0.1 %) coarsen
// the grid for all the others, and the error grows ~4x. bf16 does not care. This pins down how
// far it grows, so the scheme's limit is known rather than found in images.
TEST(Precision, Int8ErrorWithActivationOutliers) {
  const ConvCase c{1, 32, 32, 64, 64, 3, 1, 1, true, false, "direct"};
  const std::vector<float> w = uniform(64 * 64 * 9, 64 * 9, 90), b = uniform(64, 64 * 9, 91);
  const Tensor x = activations({1, 32, 32, 64}, 92, true);
  const std::vector<double> ref = conv_reference(c, x, w, b.data(), nullptr);
  const Conv2d bf16(w.data(), b.data(), 64, 64, 3, 1, 1, Precision::BF16);
  EXPECT_LE(relative_l2(bf16(x), ref), error_bound(bf16.precision()));
  const Conv2d int8(w.data(), b.data(), 64, 64, 3, 1, 1, Precision::INT8);
  const double error = relative_l2(int8(x), ref);
  RecordProperty("int8_relative_l2", std::to_string(error));
  EXPECT_LE(error, int8.precision() == Precision::INT8 ? 6e-2 : error_bound(Precision::FP32));
}

// Wide int8 layers whose activations need a zero point (SiLU outputs, >= -0.28), at shapes where
// oneDNN 2.6's brgconv gets a source zero point wrong next to the padding (relative error
// 0.5-2000 before the zero point was folded into the bias; SD's up_blocks.2.resnets.0.conv1 is
// 1920 -> 640 at 16x16). Compared with the fp32 layer, which ConvPrecision checks against loops.
TEST(Int8Quantization, WideLayersWithAZeroPoint) {
  struct Wide {
    int cin, cout, size, stride;
  };
  for (const Wide s : {Wide{1920, 64, 16, 1}, Wide{1920, 320, 16, 1}, Wide{2432, 32, 16, 1}, Wide{1792, 48, 15, 2}}) {
    SCOPED_TRACE(std::to_string(s.cin) + " -> " + std::to_string(s.cout) + " @" + std::to_string(s.size) + " s" +
                 std::to_string(s.stride));
    const std::vector<float> w = uniform(static_cast<size_t>(s.cout) * s.cin * 9, s.cin * 9, 97),
                             b = uniform(s.cout, s.cin * 9, 98);
    Tensor x = activations({1, s.size, s.size, s.cin}, 99);
    silu_(x);
    const Conv2d fp32(w.data(), b.data(), s.cin, s.cout, 3, s.stride, 1, Precision::FP32);
    const Conv2d int8(w.data(), b.data(), s.cin, s.cout, 3, s.stride, 1, Precision::INT8);
    const Tensor ref = fp32(x);
    const std::vector<double> expected(ref.data(), ref.data() + ref.numel());
    EXPECT_LE(relative_l2(int8(x), expected), error_bound(int8.precision()));
  }
}

TEST(Precision, NamesRoundTrip) {
  for (const Precision p : {Precision::FP32, Precision::BF16, Precision::INT8}) {
    Precision parsed;
    ASSERT_TRUE(parse_precision(precision_name(p), &parsed)) << precision_name(p);
    EXPECT_EQ(parsed, p);
  }
  Precision unused;
  EXPECT_FALSE(parse_precision("fp16", &unused));
  EXPECT_FALSE(parse_precision("INT8", &unused));
  EXPECT_EQ(runnable_precision(Precision::FP32), Precision::FP32);
}

// The bf16 layers' source conversion rounds exactly as the reference f32_to_bf16 (nearest even,
// NaN kept a NaN) on every thread's slice: random values over the whole exponent range, ties,
// infinities, NaN, subnormals and odd lengths.
TEST(Bf16Conversion, MatchesTheReferenceRoundingEverywhere) {
  std::mt19937 rng(7);
  std::vector<float> x(100003);
  for (float& v : x) {
    const uint32_t bits = rng();
    std::memcpy(&v, &bits, sizeof v);
  }
  const float specials[] = {1.00390625f, 1.01171875f, -1.00390625f, INFINITY, -INFINITY, 0.f, -0.f,
                            std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max()};
  std::copy(std::begin(specials), std::end(specials), x.begin() + 5000);
  std::vector<uint16_t> y(x.size() + 1, 0xabcd);
  detail::convert_to_bf16(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      ASSERT_TRUE(std::isnan(bf16_to_f32(y[i]))) << i;
      continue;
    }
    ASSERT_EQ(y[i], f32_to_bf16(x[i])) << i << " " << x[i];
  }
  EXPECT_EQ(y.back(), 0xabcd);  // nothing written past the end
}

// Activation quantization: [min(x, 0), max(x, 0)] over 256 levels, nearest integer (ties to
// even), zero exactly representable, defined results for zeros, NaN and infinity.
TEST(Int8Quantization, SpreadsTheRangeOverTheUnsignedLevels) {
  const auto quantize = [](const std::vector<float>& x, std::vector<uint8_t>* q) {
    q->assign(x.size(), 9);
    return detail::quantize_activations(x.data(), static_cast<int64_t>(x.size()), q->data());
  };
  std::vector<uint8_t> q;
  // Range [-1, 3]: scale 4/255, zero point round(63.75) = 64.
  detail::ActivationQuantization a = quantize({-1.f, 0.f, 3.f, 1.5f}, &q);
  EXPECT_FLOAT_EQ(a.scale, 4.f / 255.f);
  EXPECT_EQ(a.zero_point, 64);
  EXPECT_EQ(q, (std::vector<uint8_t>{0, 64, 255, 160}));  // 1.5 -> 95.625 -> 96 (+64)

  // Range [-100, 155]: scale 1, zero point 100; halves round to even.
  a = quantize({-100.f, 155.f, 0.5f, 1.5f, 2.5f, -0.5f}, &q);
  EXPECT_FLOAT_EQ(a.scale, 1.f);
  EXPECT_EQ(a.zero_point, 100);
  EXPECT_EQ(q, (std::vector<uint8_t>{0, 255, 100, 102, 102, 100}));

  // Only positive values: the range still starts at 0, so the zero point is 0.
  a = quantize({0.5f, 2.f}, &q);
  EXPECT_EQ(a.zero_point, 0);
  EXPECT_EQ(q, (std::vector<uint8_t>{64, 255}));  // 63.75 -> 64

  a = quantize(std::vector<float>(5, 0.f), &q);
  EXPECT_EQ(a.scale, 1.f);
  EXPECT_EQ(a.zero_point, 0);
  EXPECT_EQ(q, std::vector<uint8_t>(5, 0));

  // A NaN or infinity anywhere makes the scale NaN, so the layer's output is NaN.
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x(100000, 0.5f);
    x[54321] = bad;
    EXPECT_TRUE(std::isnan(quantize(x, &q).scale));
    EXPECT_EQ(q, std::vector<uint8_t>(x.size(), 0));
  }
}

TEST(Int8Quantization, LargeInputsUseEveryThreadAndTheGlobalRange) {
  Tensor x = activations({1 << 20}, 70);
  x.data()[777777] = -50.f;  // the extremes sit in one thread's slice each
  x.data()[12345] = 20.f;
  std::vector<uint8_t> q(static_cast<size_t>(x.numel()));
  const detail::ActivationQuantization a = detail::quantize_activations(x.data(), x.numel(), q.data());
  EXPECT_FLOAT_EQ(a.scale, 70.f / 255.f);
  EXPECT_EQ(a.zero_point, 182);  // round(50 / (70 / 255)) = round(182.14)
  EXPECT_EQ(q[777777], 0);
  EXPECT_EQ(q[12345], 255);
  for (int64_t i = 0; i < x.numel(); i += 4099)
    EXPECT_NEAR((q[i] - a.zero_point) * a.scale, x.data()[i], 0.5 * a.scale + 1e-6) << i;
}

TEST(Int8Quantization, WeightsPerOutputChannel) {
  const std::vector<float> w{0.5f, -1.f, 0.25f,   // channel 0: max 1
                             0.f, 0.f, 0.f,       // channel 1: all zero
                             4.f, 2.f, -3.f};     // channel 2: max 4
  const detail::Int8Weights q = detail::quantize_per_channel(w.data(), 3, 3);
  EXPECT_EQ(q.scales, (std::vector<float>{1.f / 127, 1.f, 4.f / 127}));
  EXPECT_EQ(q.values, (std::vector<int8_t>{64, -127, 32, 0, 0, 0, 127, 64, -95}));  // 63.5 -> 64, -95.25 -> -95
  const std::vector<float> bad{1.f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW(detail::quantize_per_channel(bad.data(), 1, 2), std::invalid_argument);
}

TEST(Int8Quantization, NonFiniteInputGivesNanOutput) {
  const std::vector<float> w = uniform(16 * 16 * 9, 16 * 9, 95);
  const Conv2d conv(w.data(), nullptr, 16, 16, 3, 1, 1, Precision::INT8);
  Tensor x = activations({1, 6, 6, 16}, 96);
  x.data()[100] = std::numeric_limits<float>::quiet_NaN();
  const Tensor y = conv(x);
  EXPECT_TRUE(std::isnan(y.data()[0])) << y.data()[0];
  // Also where the quantization makes its input: GroupNorm, and upsampling.
  const Tensor normalized = conv.normalized(x, {4, 1e-5f, nullptr, nullptr, /*silu=*/true});
  EXPECT_TRUE(std::isnan(normalized.data()[0])) << normalized.data()[0];
  const Tensor upsampled = conv.upsampled(x);
  EXPECT_TRUE(std::isnan(upsampled.data()[0])) << upsampled.data()[0];
}

// On a CPU without bf16 and VNNI instructions the low precisions fall back to fp32 with a
// note, and Winograd (AVX-512 only) to direct. Checked by re-running this test program with
// oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA); the child runs CpuWithoutBf16OrVnni below.
constexpr const char* kChildEnv = "LCMD_PRECISION_TEST_AVX2_CHILD";

TEST(Precision, FallsBackToFp32OnAnAvx2Cpu) {
  if (std::getenv(kChildEnv)) GTEST_SKIP() << "this is the child";
  std::array<char, 4096> self{};
  ASSERT_GT(readlink("/proc/self/exe", self.data(), self.size() - 1), 0);
  const std::string command = std::string("ONEDNN_MAX_CPU_ISA=AVX2 ") + kChildEnv + "=1 timeout 300 '" + self.data() +
                              "' --gtest_filter='Precision.CpuWithoutBf16OrVnni' 2>&1";
  FILE* child = popen(command.c_str(), "r");
  ASSERT_NE(child, nullptr);
  std::string output;
  std::array<char, 512> chunk;
  while (fgets(chunk.data(), static_cast<int>(chunk.size()), child)) output += chunk.data();
  const int status = pclose(child);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("[  PASSED  ] 1 test"), std::string::npos) << output;
  EXPECT_NE(output.find("bf16 needs AVX512-BF16"), std::string::npos) << output;
  EXPECT_NE(output.find("int8 needs AVX512-VNNI"), std::string::npos) << output;
}

TEST(Precision, CpuWithoutBf16OrVnni) {
  if (!std::getenv(kChildEnv)) GTEST_SKIP() << "runs in the child of FallsBackToFp32OnAnAvx2Cpu";
  EXPECT_EQ(runnable_precision(Precision::BF16), Precision::FP32);
  EXPECT_EQ(runnable_precision(Precision::INT8), Precision::FP32);
  const ConvCase c{1, 32, 32, 64, 64, 3, 1, 1, true, true, "direct"};
  const std::vector<float> w = uniform(64 * 64 * 9, 64 * 9, 80), b = uniform(64, 64 * 9, 81);
  const Tensor x = activations({1, 32, 32, 64}, 82), residual = activations({1, 32, 32, 64}, 83);
  const std::vector<double> ref = conv_reference(c, x, w, b.data(), &residual);
  for (const Precision p : {Precision::BF16, Precision::INT8, Precision::FP32}) {
    SCOPED_TRACE(precision_name(p));
    const Conv2d conv(w.data(), b.data(), 64, 64, 3, 1, 1, p);
    EXPECT_EQ(conv.precision(), Precision::FP32);
    EXPECT_EQ(conv.implementation(x.shape()).rfind("fp32 direct", 0), 0u) << conv.implementation(x.shape());
    EXPECT_LE(relative_l2(conv(x, &residual), ref), error_bound(Precision::FP32));
    const Linear linear(w.data(), b.data(), 64 * 9, 64, p);
    EXPECT_EQ(linear.precision(), Precision::FP32);
  }
}

}  // namespace
}  // namespace lcmd::ops
