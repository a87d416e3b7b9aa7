// StableDiffusionPipeline + LCMScheduler with classifier-free guidance on a plain SD UNet, with
// and without a merged LCM-LoRA, against diffusers (../shared/golden/tiny-sd-cases): token ids,
// both text embeddings, seeded latents, every step's raw batch-2 UNet output ([0] unconditional),
// the guided noise_pred, denoised and latents (<= 1e-4 relative), and the final image
// (max diff <= 2, mean <= 0.01). fp32 throughout.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "pipeline/txt2img.h"
#include "golden_runs.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using test::check_close;
using test::load_npy;
using test::load_npy_tensor;

fs::path cases_dir() { return test::golden_dir() / "tiny-sd-cases"; }

// One pipeline per LoRA scale (0 = no LoRA), loaded once.
const Txt2ImgPipeline& pipeline_with_lora(double scale) {
  static std::map<double, std::unique_ptr<Txt2ImgPipeline>> pipelines;
  auto& p = pipelines[scale];
  if (!p) {
    std::vector<LoraSpec> loras;
    if (scale != 0) loras.push_back({test::golden_dir() / "tiny-sd-lora/lora.safetensors", scale});
    p = Txt2ImgPipeline::from_folder(ModelFolder::locate(test::golden_dir() / "tiny-sd"), PipelinePrecision{}, loras);
  }
  return *p;
}

// ref_file: a file name from index.json, relative to the cases folder.
void expect_close(const Tensor& ours, const nlohmann::json& ref_file, const std::string& what) {
  const Tensor ref = load_npy_tensor(cases_dir() / ref_file.get<std::string>());
  ASSERT_EQ(ours.shape(), ref.shape()) << what;
  const std::string err = check_close(ours.data(), ref.data(), static_cast<size_t>(ref.numel()));
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

using test::request_of;

std::vector<int64_t> ids_of(const std::vector<int32_t>& ids) { return {ids.begin(), ids.end()}; }


void expect_image_close(const std::vector<uint8_t>& rgb, const nlohmann::json& ref_file, const std::string& what) {
  const std::string err = test::check_image_close(rgb, cases_dir() / ref_file.get<std::string>());
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

class StableDiffusionCfg : public ::testing::TestWithParam<int> {};

TEST_P(StableDiffusionCfg, MatchesDiffusersRun) {
  const auto index = read_json_file(cases_dir() / "index.json");
  const auto& run = index["runs"][GetParam()];
  const std::string name = run["dir"];
  const double lora_scale = run["lora_scale"].is_null() ? 0.0 : run["lora_scale"].get<double>();
  const Txt2ImgPipeline& pipeline = pipeline_with_lora(lora_scale);
  const bool guided = run["do_classifier_free_guidance"];
  EXPECT_EQ(pipeline.uses_classifier_free_guidance(run["guidance_scale"].get<double>()), guided) << name;

  PipelineTrace trace;
  const GenerateResult result = pipeline.run(request_of(run), run["seed"].get<uint64_t>(), {}, &trace);

  EXPECT_EQ(ids_of(trace.input_ids), load_npy(cases_dir() / run["input_ids"].get<std::string>()).i64) << name;
  expect_close(trace.prompt_embeds, run["prompt_embeds"], name + " prompt_embeds");
  EXPECT_TRUE(trace.w_embedding.empty()) << name << ": a plain UNet has no guidance embedding";
  if (guided) {
    EXPECT_EQ(ids_of(trace.negative_input_ids), load_npy(cases_dir() / run["negative_input_ids"].get<std::string>()).i64)
        << name;
    expect_close(trace.negative_prompt_embeds, run["negative_prompt_embeds"], name + " negative_prompt_embeds");
  } else {
    EXPECT_TRUE(trace.negative_input_ids.empty()) << name << ": gs <= 1 must not encode a negative prompt";
  }
  const Tensor init_ref = load_npy_tensor(cases_dir() / run["latents_init"].get<std::string>());
  EXPECT_LE(test::max_abs_diff(trace.latents_init.data(), init_ref.data(), init_ref.numel()), 2e-6) << name;
  EXPECT_EQ(trace.timesteps, run["timesteps"].get<std::vector<int>>()) << name;

  const auto& steps = run["steps"];
  ASSERT_EQ(trace.latents.size(), steps.size()) << name;
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::string s = name + " step " + std::to_string(i);
    expect_close(trace.unet_output[i], steps[i]["unet_output"], s + " unet_output");  // batch 2: [uncond, text]
    expect_close(trace.model_pred[i], steps[i]["noise_pred"], s + " noise_pred");
    expect_close(trace.denoised[i], steps[i]["denoised"], s + " denoised");
    expect_close(trace.latents[i], steps[i]["latents"], s + " latents");
  }
  expect_close(trace.vae_input, run["vae_input"], name + " vae_input");
  expect_close(to_nchw(trace.decoded), run["decoded"], name + " decoded");
  expect_image_close(result.rgb, run["image_uint8"], name + " image");
}

INSTANTIATE_TEST_SUITE_P(Runs, StableDiffusionCfg, ::testing::Range(0, 5));

TEST(StableDiffusionCfgSemantics, GuidanceAtMostOneIgnoresTheNegativePrompt) {
  const Txt2ImgPipeline& pipeline = pipeline_with_lora(1.0);
  GenerateRequest req;
  req.prompt = "a photo of a cat";
  req.guidance_scale = 1.0;
  req.steps = 2;
  const GenerateResult plain = pipeline.run(req, 0);
  req.negative_prompt = "blurry, low quality";
  EXPECT_EQ(pipeline.run(req, 0).rgb, plain.rgb);
}

TEST(StableDiffusionCfgSemantics, GuidanceMovesTheImageAndTheNegativePromptMatters) {
  const Txt2ImgPipeline& pipeline = pipeline_with_lora(1.0);
  GenerateRequest req;
  req.prompt = "a photo of a cat";
  req.steps = 1;
  req.guidance_scale = 3.0;
  const GenerateResult empty_negative = pipeline.run(req, 3);
  req.negative_prompt = "blurry, low quality";
  const GenerateResult with_negative = pipeline.run(req, 3);
  req.guidance_scale = 1.0;
  const GenerateResult unguided = pipeline.run(req, 3);
  EXPECT_NE(empty_negative.rgb, with_negative.rgb);
  EXPECT_NE(with_negative.rgb, unguided.rgb);
}

}  // namespace
}  // namespace lcmd
