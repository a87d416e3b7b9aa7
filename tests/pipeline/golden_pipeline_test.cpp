// Whole LatentConsistencyModelPipeline runs against diffusers (../shared/golden/tiny-lcm-cases/
// pipeline): token ids exactly, seeded latents <= 2e-6, every step's latents and denoised
// <= 1e-4 relative, final uint8 image max diff <= 2 and mean diff <= 0.01.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "pipeline/txt2img.h"
#include "golden_runs.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using test::check_close;
using test::load_npy;
using test::load_npy_tensor;

fs::path cases_dir() { return test::golden_dir() / "tiny-lcm-cases"; }

class PipelineGolden : public ::testing::TestWithParam<int> {
 protected:
  static void SetUpTestSuite() {
    pipeline_ = Txt2ImgPipeline::from_folder(ModelFolder::locate(test::golden_dir() / "tiny-lcm")).release();
  }
  static void TearDownTestSuite() { delete pipeline_; }
  static Txt2ImgPipeline* pipeline_;
};
Txt2ImgPipeline* PipelineGolden::pipeline_ = nullptr;

void expect_close(const Tensor& ours, const fs::path& ref_file, const std::string& what) {
  test::expect_tensor_close(ours, ref_file, what);
}

TEST_P(PipelineGolden, MatchesDiffusersRun) {
  const auto index = read_json_file(cases_dir() / "index.json");
  const auto& run = index["pipeline"][GetParam()];
  const std::string name = run["dir"];
  const GenerateRequest req = test::request_of(run);
  PipelineTrace trace;
  const GenerateResult result = pipeline_->run(req, run["seed"].get<uint64_t>(), {}, &trace);

  const test::Npy ids = load_npy(cases_dir() / run["input_ids"].get<std::string>());
  EXPECT_EQ(std::vector<int64_t>(trace.input_ids.begin(), trace.input_ids.end()), ids.i64) << name;
  EXPECT_EQ(trace.timesteps, run["timesteps"].get<std::vector<int>>()) << name;
  expect_close(trace.prompt_embeds, cases_dir() / run["prompt_embeds"].get<std::string>(), name + " prompt_embeds");
  const Tensor w_ref = load_npy_tensor(cases_dir() / run["w_embedding"].get<std::string>());
  ASSERT_EQ(static_cast<int64_t>(trace.w_embedding.size()), w_ref.numel());
  EXPECT_LE(test::max_abs_diff(trace.w_embedding.data(), w_ref.data(), trace.w_embedding.size()), 1e-6) << name;

  const Tensor init_ref = load_npy_tensor(cases_dir() / run["latents_init"].get<std::string>());
  EXPECT_LE(test::max_abs_diff(trace.latents_init.data(), init_ref.data(), init_ref.numel()), 2e-6) << name;

  const auto& steps = run["steps"];
  ASSERT_EQ(trace.latents.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::string s = name + " step " + std::to_string(i);
    expect_close(trace.model_pred[i], cases_dir() / steps[i]["model_pred"].get<std::string>(), s + " model_pred");
    expect_close(trace.denoised[i], cases_dir() / steps[i]["denoised"].get<std::string>(), s + " denoised");
    expect_close(trace.latents[i], cases_dir() / steps[i]["latents"].get<std::string>(), s + " latents");
  }
  expect_close(trace.vae_input, cases_dir() / run["vae_input"].get<std::string>(), name + " vae_input");
  if (fs::exists(cases_dir() / name / "decoded.npy"))  // kept for some runs only (index.json)
    expect_close(to_nchw(trace.decoded), cases_dir() / name / "decoded.npy", name + " decoded");

  const std::string image_err = test::check_image_close(result.rgb, cases_dir() / run["image_uint8"].get<std::string>());
  EXPECT_TRUE(image_err.empty()) << name << ": " << image_err;
  EXPECT_FALSE(result.png.empty());
  EXPECT_EQ(result.timings.unet_step_ms.size(), steps.size());
}

INSTANTIATE_TEST_SUITE_P(AllRuns, PipelineGolden, ::testing::Range(0, 16));

TEST(GenerateRequest, OutOfRangeValuesAreRefusedWithTheirRange) {
  auto message = [](GenerateRequest r) -> std::string {
    try {
      validate(r);
    } catch (const InputError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  GenerateRequest r;
  EXPECT_EQ(message(r), "(accepted)");
  r.width = 100;
  EXPECT_NE(message(r).find("width"), std::string::npos);
  r = {};
  r.height = 4096;
  EXPECT_NE(message(r).find("2048"), std::string::npos);
  r = {};
  r.steps = 0;
  EXPECT_NE(message(r).find("1..50"), std::string::npos);
  r = {};
  r.guidance_scale = NAN;
  EXPECT_NE(message(r).find("guidance"), std::string::npos);
}

}  // namespace
}  // namespace lcmd
