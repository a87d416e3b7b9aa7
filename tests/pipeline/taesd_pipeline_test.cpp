// LatentConsistencyModelPipeline with pipe.vae = AutoencoderTiny (golden tiny-taesd-cases/pipeline):
// the same denoising, then TAESD decodes denoised / 1.0; final uint8 max diff <= 2, mean <= 0.01.
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

fs::path cases_dir() { return test::golden_dir() / "tiny-taesd-cases"; }

TEST(TaesdPipeline, EveryGoldenRunWithTheTinyDecoder) {
  const auto pipeline = Txt2ImgPipeline::from_folder(ModelFolder::locate(test::golden_dir() / "tiny-lcm"));
  pipeline->load_taesd(test::golden_dir() / "tiny-taesd", Precision::FP32);
  const auto runs = read_json_file(cases_dir() / "index.json")["pipeline"];
  ASSERT_EQ(runs.size(), 3u);
  for (const auto& run : runs) {
    GenerateRequest req = test::request_of(run);
    req.decoder = "taesd";
    PipelineTrace trace;
    const GenerateResult r = pipeline->run(req, run["seed"].get<uint64_t>(), {}, &trace);
    const std::string name = run["dir"];
    const Tensor ref_in = test::load_npy_tensor(cases_dir() / run["vae_input"].get<std::string>());
    const std::string err = test::check_close(trace.vae_input.data(), ref_in.data(), ref_in.numel());
    EXPECT_TRUE(err.empty()) << name << " vae_input (no division by 0.18215): " << err;
    const std::string image_err = test::check_image_close(r.rgb, cases_dir() / run["image_uint8"].get<std::string>());
    EXPECT_TRUE(image_err.empty()) << name << ": " << image_err;
  }
}

TEST(TaesdPipeline, AskingForAnUnloadedOrUnknownDecoderIsAnInputError) {
  const auto pipeline = Txt2ImgPipeline::from_folder(ModelFolder::locate(test::golden_dir() / "tiny-lcm"));
  GenerateRequest req;
  req.prompt = "cat";
  req.steps = 1;
  req.decoder = "taesd";
  EXPECT_THROW(pipeline->run(req, 0), InputError);
  req.decoder = "bilinear";
  EXPECT_THROW(pipeline->run(req, 0), InputError);
  EXPECT_THROW(pipeline->set_default_decoder("taesd"), InputError);
}

}  // namespace
}  // namespace lcmd
