// Guidance ("w") and timestep embeddings against the tensors diffusers fed the UNet.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sched/embeddings.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Float32 as torch computes it leaves only sin/cos ulp differences (measured 6e-8). A
// frequency one ulp off (libm exp instead of torch's) shows up as 1.1e-4 at guidance 8, and
// double math as 4e-4, so 1e-6 separates a faithful port from both.
constexpr double kEmbeddingBound = 1e-6;

fs::path cases_dir() { return test::golden_dir() / "tiny-lcm-cases"; }

json load_index() {
  std::ifstream in(cases_dir() / "index.json");
  if (!in) throw std::runtime_error("cannot open " + (cases_dir() / "index.json").string());
  return json::parse(in);
}

void expect_embedding(const std::vector<float>& got, const fs::path& npy, const std::string& what) {
  const test::Npy ref = test::load_npy(npy);
  ASSERT_EQ(got.size(), ref.f32.size()) << what;
  EXPECT_LE(test::max_abs_diff(got.data(), ref.f32.data(), got.size()), kEmbeddingBound) << what;
}

TEST(GuidanceEmbedding, EveryPipelineRunsWEmbedding) {
  const json index = load_index();
  int checked = 0;
  for (const auto& run : index.at("pipeline")) {
    const double guidance = run.at("guidance_scale").get<double>();
    expect_embedding(guidance_scale_embedding(guidance, 32), cases_dir() / run.at("w_embedding").get<std::string>(),
                     run.at("dir").get<std::string>());
    ++checked;
  }
  EXPECT_EQ(checked, 16);
}

TEST(GuidanceEmbedding, EveryUnetCasesTimestepCond) {
  const json index = load_index();
  for (const auto& c : index.at("unet")) {
    expect_embedding(guidance_scale_embedding(c.at("guidance_scale").get<double>(), 32),
                     cases_dir() / c.at("timestep_cond").get<std::string>(), c.at("name").get<std::string>());
  }
}

TEST(GuidanceEmbedding, LayoutIsSinThenCosWithDivisorHalfMinusOne) {
  // guidance 1 -> w = 0: sin(0) = 0 in the first half, cos(0) = 1 in the second.
  const auto zero = guidance_scale_embedding(1.0, 8);
  ASSERT_EQ(zero.size(), 8u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(zero[i], 0.0f) << i;
  for (int i = 4; i < 8; ++i) EXPECT_EQ(zero[i], 1.0f) << i;
  // dim 8 -> half 4, f_i = 10000^(-i/3): the last frequency is 1e-4, so w f = 0.1 at guidance 1.1.
  // w = float(1.1 - 1) * 1000 rounds to exactly 100 in float32.
  const auto e = guidance_scale_embedding(1.1, 8);
  EXPECT_NEAR(e[3], std::sin(100 * 1e-4), 1e-6);
  EXPECT_NEAR(e[7], std::cos(100 * 1e-4), 1e-6);
  EXPECT_NEAR(e[0], std::sin(100.0), 1e-6);
  EXPECT_NEAR(e[4], std::cos(100.0), 1e-6);
  // diffusers subtracts 1 before rounding to float: float(2.1 - 1) * 1000 = 1100 exactly,
  // while (float(2.1) - 1) * 1000 = 1099.99988, which moves sin by 1.1e-4.
  const auto e21 = guidance_scale_embedding(2.1, 8);
  EXPECT_NEAR(e21[0], std::sin(1100.0), 1e-6);
  // An odd dim gets a zero appended.
  const auto odd = guidance_scale_embedding(3.0, 9);
  ASSERT_EQ(odd.size(), 9u);
  EXPECT_EQ(odd[8], 0.0f);
  EXPECT_THROW(guidance_scale_embedding(2.0, 2), std::invalid_argument);
}

TEST(TimestepEmbedding, MatchesTheUnetTimeProjIntermediate) {
  const json index = load_index();
  const auto& c = index.at("unet").at(0);
  ASSERT_EQ(c.at("timestep").get<int>(), 999);
  expect_embedding(timestep_embedding(999, 32), cases_dir() / c.at("intermediates").at("time_proj").get<std::string>(),
                   "time_proj t=999");
}

TEST(TimestepEmbedding, FlipAndShiftFollowDiffusers) {
  // t = 0: cos = 1, sin = 0. flip_sin_to_cos puts cos first.
  const auto flipped = timestep_embedding(0, 6, true);
  const auto plain = timestep_embedding(0, 6, false);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(flipped[i], 1.0f);
    EXPECT_EQ(flipped[3 + i], 0.0f);
    EXPECT_EQ(plain[i], 0.0f);
    EXPECT_EQ(plain[3 + i], 1.0f);
  }
  // freq_shift 1 divides by half - 1: with half = 3, f_2 = 10000^(-2/2) = 1e-4.
  const auto shifted = timestep_embedding(500, 6, false, 1.0f);
  EXPECT_NEAR(shifted[2], std::sin(500 * 1e-4), 1e-6);
  const auto unshifted = timestep_embedding(500, 6, false, 0.0f);
  EXPECT_NEAR(unshifted[2], std::sin(500 * std::pow(10000.0, -2.0 / 3)), 1e-6);
  EXPECT_EQ(timestep_embedding(7, 5).size(), 5u);
  EXPECT_EQ(timestep_embedding(7, 5)[4], 0.0f);
}

}  // namespace
}  // namespace lcmd
