// The single-file LDM checkpoint ../shared/golden/tiny-lcm-ldm.safetensors (the tiny-lcm weights
// with CompVis names) reproduces tiny-lcm-cases' LatentConsistencyModelPipeline runs within the
// fp32 bounds, and the Engine loads single files and LoRAs from its options.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
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

fs::path lcm_cases() { return test::golden_dir() / "tiny-lcm-cases"; }

void expect_close(const Tensor& ours, const fs::path& ref_file, const std::string& what) {
  test::expect_tensor_close(ours, ref_file, what);
}

void expect_image_close(const std::vector<uint8_t>& rgb, const fs::path& ref_file, const std::string& what) {
  const std::string err = test::check_image_close(rgb, ref_file);
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

class SingleFileGolden : public ::testing::TestWithParam<int> {
 protected:
  static const Txt2ImgPipeline& pipeline() {
    // Head counts and the scheduler from the tiny folder's configs; widths from the file.
    static const auto p = Txt2ImgPipeline::from_single_file(test::golden_dir() / "tiny-lcm-ldm.safetensors", {},
                                                            test::golden_dir() / "tiny-lcm");
    return *p;
  }
};

TEST_P(SingleFileGolden, ReproducesTheDiffusersFolderRun) {
  const auto index = read_json_file(lcm_cases() / "index.json");
  const auto& run = index["pipeline"][GetParam()];
  const std::string name = run["dir"];
  const GenerateRequest req = test::request_of(run);
  PipelineTrace trace;
  const GenerateResult result = pipeline().run(req, run["seed"].get<uint64_t>(), {}, &trace);

  EXPECT_EQ(std::vector<int64_t>(trace.input_ids.begin(), trace.input_ids.end()),
            load_npy(lcm_cases() / run["input_ids"].get<std::string>()).i64);
  expect_close(trace.prompt_embeds, lcm_cases() / run["prompt_embeds"].get<std::string>(), name + " prompt_embeds");
  const auto& steps = run["steps"];
  ASSERT_EQ(trace.latents.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::string s = name + " step " + std::to_string(i);
    expect_close(trace.model_pred[i], lcm_cases() / steps[i]["model_pred"].get<std::string>(), s + " model_pred");
    expect_close(trace.denoised[i], lcm_cases() / steps[i]["denoised"].get<std::string>(), s + " denoised");
    expect_close(trace.latents[i], lcm_cases() / steps[i]["latents"].get<std::string>(), s + " latents");
  }
  expect_image_close(result.rgb, lcm_cases() / run["image_uint8"].get<std::string>(), name);
}

// 256x256 1 step gs 1; 256x256 4 steps gs 8 (the run the golden README checked bit for bit);
// H=256 x W=384 2 steps.
INSTANTIATE_TEST_SUITE_P(Runs, SingleFileGolden, ::testing::Values(0, 5, 13));

TEST(SingleFileFp16, LoadsAndStaysWithinTheRoundingDriftOfItsWeights) {
  // The tensors themselves are checked exactly in tests/models/ldm_test.cpp. Rounding the weights
  // to fp16 moves run05's uint8 image by at most 1 (mean 0.018, golden README), so only a loose
  // image bound holds here.
  const auto p = Txt2ImgPipeline::from_single_file(test::golden_dir() / "tiny-lcm-ldm.fp16.safetensors", {},
                                                   test::golden_dir() / "tiny-lcm");
  GenerateRequest req;
  req.prompt = "a photo of a cat";
  const GenerateResult r = p->run(req, 0);
  const std::string err =
      test::check_image_close(r.rgb, lcm_cases() / "pipeline/run05_256x256_s4_g8_seed0/image_uint8.npy", 2, 0.05);
  EXPECT_TRUE(err.empty()) << err;
}

TEST(EngineLoad, SingleFileAndLoraOptionsReachThePipeline) {
  EngineOptions options;
  options.precision = "fp32";
  options.config_dir = test::golden_dir() / "tiny-lcm";
  const auto lcm = Engine::load(test::golden_dir() / "tiny-lcm-ldm.safetensors", options);
  GenerateRequest req;
  req.prompt = "a photo of a cat";
  req.seed = 0;
  expect_image_close(lcm->generate(req).rgb, lcm_cases() / "pipeline/run05_256x256_s4_g8_seed0/image_uint8.npy",
                     "single file run05");

  // tiny-sd-cases (b): LoRA 1.0, gs 2, negative prompt, seed 1.
  EngineOptions sd;
  sd.precision = "fp32";
  sd.loras = {{test::golden_dir() / "tiny-sd-lora/lora.fp16.safetensors", 1.0}};
  const auto engine = Engine::load(test::golden_dir() / "tiny-sd", sd);
  req.negative_prompt = "blurry, low quality";
  req.guidance_scale = 2.0;
  req.seed = 1;
  expect_image_close(engine->generate(req).rgb,
                     test::golden_dir() / "tiny-sd-cases/b_lora1_g2_neg_s4_256x256_seed1/image_uint8.npy", "lora run b");
}

TEST(EngineLoad, PicklesAndMissingTokenizersAreRefusedWithAWayOut) {
  test::TempDir dir;
  std::ofstream(dir.path() / "model.ckpt") << "not read";
  try {
    Engine::load(dir.path() / "model.ckpt");
    FAIL() << "a pickle was accepted";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("weights_only=True"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
  fs::copy_file(test::golden_dir() / "tiny-lcm-ldm.safetensors", dir.path() / "model.safetensors");
  try {
    Engine::load(dir.path() / "model.safetensors");
    FAIL() << "a single file without a tokenizer was accepted";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("--tokenizer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lcmd
