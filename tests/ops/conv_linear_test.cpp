// Conv2d and Linear (oneDNN) in fp32 against naive double-precision loops: shapes, residuals,
// errors. The bf16 / int8 precisions and the Winograd choice are tested in precision_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "ops/conv_banding_impl.h"
#include "ops/ops.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

using test::matches_reference;
using test::random_tensor;
using test::random_vector;

// fp32 bounds: relative L2 and max error / max|ref|. Direct convolution and matmul measure
// ~3e-7; Winograd F(4x4, 3x3), which runs the 64-channel 16x16 case below, ~8e-7 and 1.5e-6.
constexpr double kRelL2 = 2e-6, kMaxFraction = 5e-6;

struct ConvCase {
  int batch, height, width, cin, cout, kernel, stride, padding;
  bool bias, residual;
};

std::string case_name(const ConvCase& c) {
  return std::to_string(c.batch) + "x" + std::to_string(c.height) + "x" + std::to_string(c.width) + "x" +
         std::to_string(c.cin) + " -> " + std::to_string(c.cout) + " k" + std::to_string(c.kernel) + " s" +
         std::to_string(c.stride) + " p" + std::to_string(c.padding) + (c.bias ? " bias" : "") +
         (c.residual ? " residual" : "");
}

void PrintTo(const ConvCase& c, std::ostream* os) { *os << case_name(c); }

// NHWC x, PyTorch [cout, cin, k, k] weights.
std::vector<double> conv_reference(const ConvCase& c, const Tensor& x, const std::vector<float>& w,
                                   const float* bias, const Tensor* residual) {
  const int oh = (c.height + 2 * c.padding - c.kernel) / c.stride + 1;
  const int ow = (c.width + 2 * c.padding - c.kernel) / c.stride + 1;
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
              for (int ci = 0; ci < c.cin; ++ci)
                acc += static_cast<double>(px[ci]) * w[((static_cast<size_t>(co) * c.cin + ci) * c.kernel + ky) * c.kernel + kx];
            }
          const size_t i = ((static_cast<size_t>(n) * oh + oy) * ow + ox) * c.cout + co;
          y[i] = acc + (residual ? residual->data()[i] : 0.0);
        }
  return y;
}

class ConvAgainstReference : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvAgainstReference, MatchesDoubleLoops) {
  const ConvCase c = GetParam();
  SCOPED_TRACE(case_name(c));
  const Tensor x = random_tensor({c.batch, c.height, c.width, c.cin}, 1);
  const std::vector<float> w = random_vector(static_cast<size_t>(c.cout) * c.cin * c.kernel * c.kernel, 2);
  const std::vector<float> b = random_vector(c.cout, 3);
  const Conv2d conv(w.data(), c.bias ? b.data() : nullptr, c.cin, c.cout, c.kernel, c.stride, c.padding);
  EXPECT_EQ(conv.in_channels(), c.cin);
  EXPECT_EQ(conv.out_channels(), c.cout);
  const int oh = (c.height + 2 * c.padding - c.kernel) / c.stride + 1;
  const int ow = (c.width + 2 * c.padding - c.kernel) / c.stride + 1;
  const Tensor residual = random_tensor({c.batch, oh, ow, c.cout}, 4);
  const Tensor* res = c.residual ? &residual : nullptr;
  const Tensor y = conv(x, res);
  ASSERT_EQ(y.shape(), (Shape{c.batch, oh, ow, c.cout}));
  const auto ref = conv_reference(c, x, w, c.bias ? b.data() : nullptr, res);
  EXPECT_TRUE(matches_reference(y, ref, kRelL2, kMaxFraction));
  // A second call reuses the cached primitive and must give the same result.
  const Tensor again = conv(x, res);
  EXPECT_EQ(0, std::memcmp(again.data(), y.data(), sizeof(float) * y.numel()));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvAgainstReference,
    ::testing::Values(ConvCase{1, 8, 8, 32, 32, 3, 1, 1, true, false},     // UNet-style 3x3
                      ConvCase{2, 9, 7, 5, 7, 3, 1, 1, true, false},       // odd sizes, batch 2
                      ConvCase{2, 9, 7, 5, 7, 3, 1, 1, true, true},        // + residual (sum post-op)
                      ConvCase{1, 12, 12, 4, 32, 3, 1, 1, true, false},    // conv_in: 4 channels
                      ConvCase{1, 12, 10, 32, 3, 3, 1, 1, true, false},    // conv_out: 3 channels
                      ConvCase{1, 6, 6, 3, 4, 3, 1, 1, false, false},      // tiny, no bias
                      ConvCase{2, 9, 9, 16, 16, 3, 2, 1, true, false},     // Downsample2D: 3x3 s2 p1, odd
                      ConvCase{1, 8, 8, 16, 24, 3, 2, 1, true, true},      // s2 + residual
                      ConvCase{2, 5, 7, 24, 40, 1, 1, 0, true, false},     // 1x1 (matmul path)
                      ConvCase{1, 4, 4, 40, 24, 1, 1, 0, false, true},     // 1x1 + residual, no bias
                      ConvCase{1, 16, 16, 64, 64, 3, 1, 1, true, true}));  // several channel blocks (Winograd)

TEST(Conv2d, NewInputShapesReuseTheLayer) {
  const ConvCase small{1, 4, 4, 16, 16, 3, 1, 1, true, false}, large{2, 20, 18, 16, 16, 3, 1, 1, true, false};
  const std::vector<float> w = random_vector(16 * 16 * 9, 5), b = random_vector(16, 6);
  const Conv2d conv(w.data(), b.data(), 16, 16, 3, 1, 1);
  for (const ConvCase& c : {small, large, small}) {
    SCOPED_TRACE(case_name(c));
    const Tensor x = random_tensor({c.batch, c.height, c.width, c.cin}, 7);
    EXPECT_TRUE(matches_reference(conv(x), conv_reference(c, x, w, b.data(), nullptr), kRelL2, kMaxFraction));
  }
}

TEST(Conv2d, WeightsAreCopiedAtConstruction) {
  std::vector<float> w = random_vector(8 * 4 * 9, 8);
  const std::vector<float> original = w;
  const Conv2d conv(w.data(), nullptr, 4, 8, 3, 1, 1);
  std::fill(w.begin(), w.end(), 0.f);  // the caller's buffer may go away after construction
  const ConvCase c{1, 5, 5, 4, 8, 3, 1, 1, false, false};
  const Tensor x = random_tensor({1, 5, 5, 4}, 9);
  EXPECT_TRUE(matches_reference(conv(x), conv_reference(c, x, original, nullptr, nullptr), kRelL2, kMaxFraction));
}

TEST(Conv2d, WrongChannelCountThrowsNamingTheShapes) {
  const std::vector<float> w = random_vector(3 * 4 * 9, 10);
  const Conv2d conv(w.data(), nullptr, 4, 3, 3, 1, 1);
  try {
    conv(Tensor::zeros({1, 8, 8, 5}));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[1, 8, 8, 5]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[N, H, W, 4]"), std::string::npos) << msg;
  }
  EXPECT_THROW(conv(Tensor::zeros({8, 8, 4})), std::invalid_argument);                    // not 4-D
  const Tensor wrong_residual = Tensor::zeros({1, 8, 8, 4});  // output has 3 channels
  EXPECT_THROW(conv(Tensor::zeros({1, 8, 8, 4}), &wrong_residual), std::invalid_argument);
  EXPECT_THROW(Conv2d(w.data(), nullptr, 4, 3, 0, 1, 1), std::invalid_argument);        // kernel 0
  EXPECT_THROW(Conv2d().operator()(Tensor::zeros({1, 8, 8, 4})), std::logic_error);      // no weights
}

TEST(Conv2d, InputSmallerThanKernelThrows) {
  const std::vector<float> w = random_vector(2 * 2 * 9, 11);
  const Conv2d conv(w.data(), nullptr, 2, 2, 3, 1, 0);
  EXPECT_THROW(conv(Tensor::zeros({1, 2, 2, 2})), std::invalid_argument);
}

// ---- Winograd in bands of output rows ----

TEST(WinogradRowBands, WholeImageWhenItFitsOrIsTooSmallToSplit) {
  using detail::RowBand;
  const size_t unlimited = std::numeric_limits<size_t>::max();
  EXPECT_EQ(detail::winograd_row_bands(1, 256, 256, 256, 256, unlimited), (std::vector<RowBand>{{0, 256}}));
  // 64 rows of 64 pixels are kWinogradBandMinPixels: no band may be smaller, even with no budget.
  EXPECT_EQ(detail::winograd_row_bands(1, 64, 64, 16, 16, 0), (std::vector<RowBand>{{0, 64}}));
}

TEST(WinogradRowBands, CoverTheRowsInTileAlignedBandsWithinBudget) {
  struct Case { int64_t batch, height, width, cin, cout; size_t budget; };
  for (const Case& c : {Case{1, 256, 256, 256, 256, detail::kWinogradBandBytes},
                        Case{1, 256, 256, 128, 128, detail::kWinogradBandBytes},
                        Case{1, 512, 512, 128, 128, detail::kWinogradBandBytes},
                        Case{1, 203, 64, 16, 16, 0}, Case{2, 203, 64, 32, 16, 0}, Case{1, 257, 256, 256, 128, 1u << 20}}) {
    SCOPED_TRACE(std::to_string(c.batch) + "x" + std::to_string(c.height) + "x" + std::to_string(c.width));
    const auto bands = detail::winograd_row_bands(c.batch, c.height, c.width, c.cin, c.cout, c.budget);
    ASSERT_GT(bands.size(), 1u);
    int64_t next = 0;
    for (const detail::RowBand& band : bands) {
      EXPECT_EQ(band.begin, next);
      EXPECT_EQ(band.begin % detail::kWinogradTileRows, 0);
      EXPECT_GT(band.end, band.begin);
      next = band.end;
      if (band.end == c.height) continue;  // the last band holds what is left
      const int64_t pixels = c.batch * (band.end - band.begin) * c.width;
      EXPECT_GE(pixels, detail::kWinogradBandMinPixels);
      if (c.budget >= detail::winograd_working_bytes(detail::kWinogradBandMinPixels, c.cin, c.cout))
        EXPECT_LE(detail::winograd_working_bytes(pixels, c.cin, c.cout), c.budget);
    }
    EXPECT_EQ(next, c.height);
  }
  // The VAE's largest layer at 256x256 (256 channels in and out): bands of 32 rows.
  EXPECT_EQ(detail::winograd_row_bands(1, 256, 256, 256, 256, detail::kWinogradBandBytes).size(), 8u);
}

// Winograd transforms the weights into its scratchpad on every call; layers where that would
// exceed kWinogradWeightScratchBytes (the UNet's 1920 -> 640 up-block convolution: 177 MB) run
// direct, the VAE's widest (512 -> 512: 38 MB) stay on Winograd.
TEST(Conv2d, WinogradOnlyWhereItsWeightTransformFitsTheBudget) {
  if (runnable_precision(Precision::BF16) != Precision::BF16) GTEST_SKIP() << "Winograd needs an AVX-512 CPU";
  EXPECT_GT(detail::winograd_weight_scratch_bytes(1920, 640), detail::kWinogradWeightScratchBytes);
  EXPECT_LE(detail::winograd_weight_scratch_bytes(512, 512), detail::kWinogradWeightScratchBytes);
  for (const auto [cin, cout, winograd] : {std::tuple{1920, 640, false}, std::tuple{512, 512, true}}) {
    const std::vector<float> w = random_vector(static_cast<size_t>(cin) * cout * 9, 60, -0.01f, 0.01f);
    const Conv2d conv(w.data(), nullptr, cin, cout, 3, 1, 1);
    const std::string kernel = conv.implementation({1, 16, 16, cin});
    EXPECT_EQ(kernel.find("winograd") != std::string::npos, winograd) << cin << " -> " << cout << ": " << kernel;
  }
}

// Sets the band budget of the plans created while it lives.
class BandBudget {
 public:
  explicit BandBudget(size_t bytes) : saved_(detail::winograd_band_budget()) { detail::set_winograd_band_budget(bytes); }
  ~BandBudget() { detail::set_winograd_band_budget(saved_); }
  BandBudget(const BandBudget&) = delete;
  BandBudget& operator=(const BandBudget&) = delete;

 private:
  size_t saved_;
};

// Runs a fresh layer (no cached plans) under the given band budget; returns its output and kernel.
std::pair<Tensor, std::string> conv_with_budget(size_t budget, const ConvCase& c, const std::vector<float>& w,
                                                const std::vector<float>& b, const Tensor& x, const Tensor* residual) {
  const BandBudget scope(budget);
  const Conv2d conv(w.data(), c.bias ? b.data() : nullptr, c.cin, c.cout, c.kernel, c.stride, c.padding);
  return {conv(x, residual), conv.implementation(x.shape())};
}

class WinogradBanding : public ::testing::TestWithParam<ConvCase> {};

TEST_P(WinogradBanding, BandsMatchTheWholeImageAndTheReference) {
  const ConvCase c = GetParam();
  SCOPED_TRACE(case_name(c));
  const Tensor x = random_tensor({c.batch, c.height, c.width, c.cin}, 30);
  const std::vector<float> w = random_vector(static_cast<size_t>(c.cout) * c.cin * c.kernel * c.kernel, 31);
  const std::vector<float> b = random_vector(c.cout, 32);
  const int oh = c.height + 2 * c.padding - 2, ow = c.width + 2 * c.padding - 2;
  const Tensor residual = random_tensor({c.batch, oh, ow, c.cout}, 33);
  const Tensor* res = c.residual ? &residual : nullptr;

  const auto [whole, whole_kernel] = conv_with_budget(std::numeric_limits<size_t>::max(), c, w, b, x, res);
  const auto [banded, banded_kernel] = conv_with_budget(0, c, w, b, x, res);  // the smallest bands allowed
  EXPECT_NE(whole_kernel.find("winograd"), std::string::npos) << whole_kernel;
  EXPECT_EQ(whole_kernel.find("bands"), std::string::npos) << whole_kernel;
  EXPECT_NE(banded_kernel.find("winograd in"), std::string::npos) << banded_kernel;

  const auto ref = conv_reference(c, x, w, c.bias ? b.data() : nullptr, res);
  EXPECT_TRUE(matches_reference(whole, ref, kRelL2, kMaxFraction));
  EXPECT_TRUE(matches_reference(banded, ref, kRelL2, kMaxFraction));
  // Bands start on whole 4x4 tiles, so each tile sees the inputs it sees unbanded; oneDNN may
  // still block the channel sums differently for another tile count (bit-identical up to 32
  // channels here, ~7e-7 rel L2 apart at 128), so the bound is the fp32 conv tests' one.
  const std::vector<double> whole_values(whole.data(), whole.data() + whole.numel());
  EXPECT_TRUE(matches_reference(banded, whole_values, kRelL2, kMaxFraction));
}

// Heights past kWinogradBandMinPixels / width, so a budget of 0 gives several bands; odd heights
// leave a short last band.
INSTANTIATE_TEST_SUITE_P(
    Shapes, WinogradBanding,
    ::testing::Values(ConvCase{1, 203, 64, 16, 16, 3, 1, 1, true, false},    // 4 bands, last 47 rows
                      ConvCase{1, 203, 64, 16, 16, 3, 1, 1, true, true},     // + residual
                      ConvCase{2, 131, 37, 32, 16, 3, 1, 1, false, true},    // batch 2, odd width, cin != cout
                      ConvCase{1, 250, 48, 16, 32, 3, 1, 0, true, false},   // no padding: every band has real halos
                      ConvCase{1, 260, 32, 128, 64, 3, 1, 1, true, true}));  // VAE-like channel counts

// ---- Convolutions that make their own input: GroupNorm or 2x upsampling on the fly ----

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

struct MadeInputCase {
  const char* name;
  int batch, height, width, cin, cout;
  Precision precision;
  size_t band_budget;  // 0: the smallest bands allowed
  Conv3x3Algorithm algorithm = Conv3x3Algorithm::kDirect;
};

void PrintTo(const MadeInputCase& c, std::ostream* os) { *os << c.name; }

class MadeInput : public ::testing::TestWithParam<MadeInputCase> {};

// conv.normalized(x, norm) is conv(group_norm(x, norm)) and conv.upsampled(x) is
// conv(upsample_nearest2x(x)), bit for bit: fused into the Winograd path's layout conversion
// (whole or in bands, where halo rows come from the neighbouring bands), made band by band for
// bf16 and int8 Winograd, upsampled row by row as int8 quantizes it, and made first on a direct
// path (bf16 here, and int8's GroupNorm).
TEST_P(MadeInput, EqualsMakingTheInputFirst) {
  const MadeInputCase c = GetParam();
  const BandBudget scope(c.band_budget);
  const std::vector<float> w = random_vector(static_cast<size_t>(c.cout) * c.cin * 9, 40, -0.2f, 0.2f);
  const std::vector<float> b = random_vector(c.cout, 41);
  const std::vector<float> gamma = random_vector(c.cin, 42, 0.5f, 1.5f), beta = random_vector(c.cin, 43);
  const Conv2d conv(w.data(), b.data(), c.cin, c.cout, 3, 1, 1, c.precision, c.algorithm);
  // Statistics far from zero mean and unit variance, as the VAE's maps have.
  const Tensor x = random_tensor({c.batch, c.height, c.width, c.cin}, 44, 3.f, 11.f);
  const Tensor residual = random_tensor({c.batch, c.height, c.width, c.cout}, 45);
  for (const bool silu : {true, false})
    for (const Tensor* res : {static_cast<const Tensor*>(nullptr), &residual}) {
      const GroupNormArgs norm{8, 1e-6f, gamma.data(), beta.data(), silu};
      const Tensor made = conv(group_norm(x, norm.groups, norm.eps, norm.gamma, norm.beta, norm.silu), res);
      EXPECT_TRUE(same_bits(conv.normalized(x, norm, res), made)) << "silu " << silu << ", residual " << (res != nullptr);
    }
  const Tensor small = random_tensor({c.batch, c.height / 2, c.width / 2, c.cin}, 46);
  const Tensor up_residual = random_tensor({c.batch, c.height / 2 * 2, c.width / 2 * 2, c.cout}, 47);
  EXPECT_TRUE(same_bits(conv.upsampled(small), conv(upsample_nearest2x(small))));
  EXPECT_TRUE(same_bits(conv.upsampled(small, &up_residual), conv(upsample_nearest2x(small), &up_residual)));

  const std::string kernel = conv.implementation(x.shape());
  if (c.precision == Precision::FP32 && runnable_precision(Precision::BF16) == Precision::BF16)  // an AVX-512 CPU
    EXPECT_NE(kernel.find(c.band_budget == 0 ? "winograd in" : "winograd"), std::string::npos) << kernel;
  if (c.algorithm == Conv3x3Algorithm::kWinograd && runnable_precision(c.precision) == c.precision)
    EXPECT_NE(kernel.find(std::string(precision_name(c.precision)) + " winograd-f2"), std::string::npos) << kernel;
}

INSTANTIATE_TEST_SUITE_P(
    Paths, MadeInput,
    ::testing::Values(MadeInputCase{"winograd", 1, 24, 20, 32, 16, Precision::FP32, SIZE_MAX},
                      MadeInputCase{"winograd_in_bands", 2, 132, 38, 32, 48, Precision::FP32, 0},
                      MadeInputCase{"direct_bf16", 1, 24, 20, 32, 16, Precision::BF16, SIZE_MAX},
                      MadeInputCase{"bf16_winograd_in_bands", 2, 35, 18, 32, 48, Precision::BF16, 0,
                                    Conv3x3Algorithm::kWinograd},
                      MadeInputCase{"int8", 2, 26, 19, 32, 48, Precision::INT8, SIZE_MAX},
                      MadeInputCase{"int8_winograd_in_bands", 2, 35, 18, 32, 48, Precision::INT8, 0,
                                    Conv3x3Algorithm::kWinograd}),
    [](const ::testing::TestParamInfo<MadeInputCase>& info) { return std::string(info.param.name); });

TEST(MadeInput, BadInputsThrowNamingTheProblem) {
  const std::vector<float> w = random_vector(16 * 16 * 9, 48);
  const Conv2d conv(w.data(), nullptr, 16, 16, 3, 1, 1);
  const Tensor x = random_tensor({1, 24, 20, 16}, 49);
  const auto message = [](auto&& call) {
    try {
      call();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  EXPECT_NE(message([&] { conv.normalized(x, {5, 1e-6f, nullptr, nullptr, true}); }).find("cannot be split into 5 groups"),
            std::string::npos);
  EXPECT_NE(message([&] { conv.normalized(x, {4, -1.f, nullptr, nullptr, true}); }).find("eps must be >= 0"),
            std::string::npos);
  EXPECT_NE(message([&] { conv.normalized(random_tensor({1, 24, 20, 8}, 50), {4, 1e-6f, nullptr, nullptr, true}); })
                .find("must be NHWC [N, H, W, 16]"),
            std::string::npos);
  EXPECT_NE(message([&] { conv.upsampled(random_tensor({24, 20, 16}, 51)); }).find("to upsample must be NHWC"),
            std::string::npos);
  const Tensor wrong_residual = random_tensor({1, 24, 20, 16}, 52);  // the input's size, not the upsampled one
  EXPECT_NE(message([&] { conv.upsampled(x, &wrong_residual); }).find("does not match the output"), std::string::npos);
}

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

TEST(Linear, ThreeDimensionalInputMatchesReference) {
  const int in = 48, out = 40;
  const std::vector<float> w = random_vector(out * in, 20), b = random_vector(out, 21);
  const Linear linear(w.data(), b.data(), in, out);
  EXPECT_EQ(linear.in_features(), in);
  EXPECT_EQ(linear.out_features(), out);
  for (int64_t tokens : {77, 1, 130, 5}) {  // row count changes per call
    SCOPED_TRACE(tokens);
    const Tensor x = random_tensor({2, tokens, in}, 22);
    const Tensor y = linear(x);
    ASSERT_EQ(y.shape(), (Shape{2, tokens, out}));
    EXPECT_TRUE(matches_reference(y, linear_reference(x, w, b.data(), out, nullptr), kRelL2, kMaxFraction));
  }
}

TEST(Linear, ResidualAndNoBias) {
  const int in = 33, out = 17;
  const std::vector<float> w = random_vector(out * in, 23);
  const Linear linear(w.data(), nullptr, in, out);
  const Tensor x = random_tensor({3, 7, in}, 24), residual = random_tensor({3, 7, out}, 25);
  EXPECT_TRUE(matches_reference(linear(x, &residual), linear_reference(x, w, nullptr, out, &residual), kRelL2, kMaxFraction));
  EXPECT_TRUE(matches_reference(linear(x), linear_reference(x, w, nullptr, out, nullptr), kRelL2, kMaxFraction));
}

TEST(Linear, SingleRowAndLargeLayer) {
  const int in = 320, out = 1280;  // the time-embedding shape: one row
  const std::vector<float> w = random_vector(static_cast<size_t>(out) * in, 26), b = random_vector(out, 27);
  const Linear linear(w.data(), b.data(), in, out);
  for (int64_t rows : {1, 2, 300}) {
    SCOPED_TRACE(rows);
    const Tensor x = random_tensor({rows, in}, 28);
    EXPECT_TRUE(matches_reference(linear(x), linear_reference(x, w, b.data(), out, nullptr), kRelL2, kMaxFraction));
  }
}

TEST(Linear, BadInputsThrow) {
  const std::vector<float> w = random_vector(6, 29);
  const Linear linear(w.data(), nullptr, 3, 2);
  EXPECT_THROW(linear(Tensor::zeros({4, 2})), std::invalid_argument);
  const Tensor wrong_residual = Tensor::zeros({4, 3});
  EXPECT_THROW(linear(Tensor::zeros({4, 3}), &wrong_residual), std::invalid_argument);
  EXPECT_THROW(Linear(w.data(), nullptr, 0, 2), std::invalid_argument);
  EXPECT_THROW(Linear().operator()(Tensor::zeros({1, 3})), std::logic_error);
}

// The residual overloads taking the residual by rvalue: the same bits as the const ones at
// every precision; a direct convolution or matmul writes into the residual's storage when it
// holds it alone, and leaves a residual another tensor shares (or that is the input) untouched.
TEST(ResidualGivenUp, SameBitsAndOnlySoleOwnersAreWrittenInto) {
  for (const Precision p : {Precision::FP32, Precision::BF16, Precision::INT8}) {
    SCOPED_TRACE(precision_name(p));
    const std::vector<float> w = random_vector(32 * 32 * 9, 40), b = random_vector(48, 41);  // 48: the Linear's
    const Conv2d conv(w.data(), b.data(), 32, 32, 3, 1, 1, p);  // 8x8: direct at every precision
    const Linear linear(w.data(), b.data(), 96, 48, p);
    const Tensor x = random_tensor({1, 8, 8, 32}, 42), rows = random_tensor({2, 5, 96}, 43);
    const Tensor residual = random_tensor({1, 8, 8, 32}, 44), row_residual = random_tensor({2, 5, 48}, 45);
    const GroupNormArgs norm{8, 1e-5f, nullptr, nullptr, true};
    auto same_bits = [](const Tensor& a, const Tensor& e) {
      return a.shape() == e.shape() && std::memcmp(a.data(), e.data(), sizeof(float) * e.numel()) == 0;
    };
    const Tensor conv_expected = conv(x, &residual), norm_expected = conv.normalized(x, norm, &residual);
    const Tensor linear_expected = linear(rows, &row_residual);

    Tensor sole = residual.clone();
    const float* storage = sole.data();
    Tensor y = conv(x, std::move(sole));
    EXPECT_TRUE(same_bits(y, conv_expected));
    EXPECT_EQ(y.data(), storage);  // written into the residual's storage
    sole = residual.clone();
    storage = sole.data();
    y = conv.normalized(x, norm, std::move(sole));
    EXPECT_TRUE(same_bits(y, norm_expected));
    EXPECT_EQ(y.data(), storage);
    Tensor sole_rows = row_residual.clone();
    storage = sole_rows.data();
    y = linear(rows, std::move(sole_rows));
    EXPECT_TRUE(same_bits(y, linear_expected));
    EXPECT_EQ(y.data(), storage);

    Tensor shared = residual.clone();
    const Tensor other = shared.reshape({64, 32});  // another tensor on the same storage
    y = conv(x, std::move(shared));
    EXPECT_TRUE(same_bits(y, conv_expected));
    EXPECT_NE(y.data(), other.data());
    EXPECT_TRUE(same_bits(other.reshape(residual.shape()), residual));
    Tensor shared_rows = row_residual.clone();
    const Tensor other_rows = shared_rows;
    y = linear(rows, std::move(shared_rows));
    EXPECT_TRUE(same_bits(y, linear_expected));
    EXPECT_TRUE(same_bits(other_rows, row_residual));

    Tensor input = x.clone();  // the input as its own residual: read while y is written
    const Tensor input_expected = conv(x, &x);
    y = conv(input, std::move(input));
    EXPECT_TRUE(same_bits(y, input_expected));
  }
}

// A Winograd convolution reads the residual while it writes its output: it takes a new map,
// and gives the same bits.
TEST(ResidualGivenUp, WinogradTakesANewMap) {
  const std::vector<float> w = random_vector(64 * 64 * 9, 46), b = random_vector(64, 47);
  const Conv2d conv(w.data(), b.data(), 64, 64, 3, 1, 1);  // fp32 Winograd from 256 output pixels
  const Tensor x = random_tensor({1, 16, 16, 64}, 48), residual = random_tensor({1, 16, 16, 64}, 49);
  ASSERT_NE(conv.implementation(x.shape()).find("winograd"), std::string::npos);
  const Tensor expected = conv(x, &residual);
  Tensor given = residual.clone();
  const float* storage = given.data();
  const Tensor y = conv(x, std::move(given));
  EXPECT_NE(y.data(), storage);
  EXPECT_EQ(0, std::memcmp(y.data(), expected.data(), sizeof(float) * expected.numel()));
}

}  // namespace
}  // namespace lcmd::ops
