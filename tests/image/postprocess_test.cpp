// to_rgb8 against diffusers' postprocess + numpy_to_pil (golden decoded.npy -> image_uint8.npy).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "image/postprocess.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

fs::path cases_dir() { return test::golden_dir() / "tiny-lcm-cases"; }

// decoded.npy is NCHW [1, 3, H, W]; image_uint8.npy is [H, W, 3].
void expect_exact_image(const fs::path& dir) {
  const Tensor decoded = test::load_npy_tensor(dir / "decoded.npy");
  const test::Npy expected = test::load_npy(dir / "image_uint8.npy");
  ASSERT_EQ(expected.dtype, "|u1") << dir;
  const std::vector<uint8_t> got = to_rgb8(to_nhwc(decoded));
  ASSERT_EQ(got.size(), expected.u8.size()) << dir;
  size_t differing = 0;
  for (size_t i = 0; i < got.size(); ++i) differing += got[i] != expected.u8[i];
  EXPECT_EQ(differing, 0u) << dir << ": " << differing << " of " << got.size() << " values differ";
}

TEST(ToRgb8, VaeCasesExactly) {
  int cases = 0;
  for (const auto& entry : fs::directory_iterator(cases_dir() / "vae")) {
    expect_exact_image(entry.path());
    ++cases;
  }
  EXPECT_EQ(cases, 3);
}

// Only the runs index.json lists with a "decoded" file kept it (4 of 16).
TEST(ToRgb8, PipelineRunsExactly) {
  std::ifstream in(cases_dir() / "index.json");
  ASSERT_TRUE(in) << "cannot open index.json";
  const nlohmann::json index = nlohmann::json::parse(in);
  int runs = 0;
  for (const auto& run : index.at("pipeline")) {
    if (!run.contains("decoded")) continue;
    expect_exact_image(cases_dir() / run.at("dir").get<std::string>());
    ++runs;
  }
  EXPECT_EQ(runs, 4);
}

// The float x whose (x / 2 + 0.5) * 255 is exactly k + 0.5 in float32, searched near the
// real-valued answer; NaN if there is none nearby.
float input_for_half_value(int k) {
  float x = static_cast<float>((k + 0.5) / 255.0 * 2.0 - 1.0);
  for (int i = 0; i < 64; ++i) x = std::nextafter(x, -2.0f);
  for (int i = 0; i < 128; ++i, x = std::nextafter(x, 2.0f))
    if ((x / 2.0f + 0.5f) * 255.0f == static_cast<float>(k) + 0.5f) return x;
  return std::numeric_limits<float>::quiet_NaN();
}

TEST(ToRgb8, RoundsHalfToEvenClampsAndMapsNaNToZero) {
  // One pixel per case: [1, 1, 1, 3]; the cases come in threes.
  auto convert = [](float a, float b, float c) {
    const float v[3] = {a, b, c};
    return to_rgb8(Tensor::from({1, 1, 1, 3}, v));
  };
  EXPECT_EQ(convert(-1.0f, 1.0f, 0.0f), (std::vector<uint8_t>{0, 255, 128}));  // 127.5 -> 128 (even)
  EXPECT_EQ(convert(-7.0f, 3.0f, std::nanf("")), (std::vector<uint8_t>{0, 255, 0}));
  EXPECT_EQ(convert(-INFINITY, INFINITY, -0.0f), (std::vector<uint8_t>{0, 255, 128}));

  int ties = 0;
  for (int k = 1; k < 254; ++k) {
    const float x = input_for_half_value(k);
    if (std::isnan(x)) continue;
    const auto rgb = convert(x, x, x);
    const int even = k % 2 == 0 ? k : k + 1;
    EXPECT_EQ(rgb[0], even) << "k + 0.5 with k = " << k;
    ++ties;
  }
  EXPECT_GE(ties, 20);  // enough exact ties to show both directions of the rule
}

TEST(ToRgb8, ChecksTheShape) {
  EXPECT_THROW(to_rgb8(Tensor::zeros({1, 3, 4, 4})), std::invalid_argument);  // NCHW by mistake
  EXPECT_THROW(to_rgb8(Tensor::zeros({2, 4, 4, 3})), std::invalid_argument);
  EXPECT_THROW(to_rgb8(Tensor::zeros({4, 4, 3})), std::invalid_argument);
  EXPECT_EQ(to_rgb8(Tensor::zeros({1, 2, 5, 3})).size(), 30u);
}

}  // namespace
}  // namespace lcmd
