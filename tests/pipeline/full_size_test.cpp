// The full-size SD1.5 LCM architecture (../shared/sd15 configs): a random-weight folder written
// by make-random-model holds exactly the tensors of the real files, loads, and gives a finite
// 256x256 image in 4 steps. Takes about a minute and 6 GB.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "pipeline/random_model.h"
#include "pipeline/txt2img.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

TEST(FullSize, RandomSd15FolderMatchesTheManifestAndGeneratesAFiniteImage) {
  test::TempDir dir;
  const fs::path model = dir.path() / "sd15-random";
  write_random_model(test::shared_dir() / "sd15", test::golden_dir() / "tokenizer", model, DType::F16, 1);

  const auto manifest = read_json_file(test::shared_dir() / "sd15/manifest.json");
  const std::map<std::string, std::string> files = {{"unet", "unet/diffusion_pytorch_model.fp16.safetensors"},
                                                    {"vae", "vae/diffusion_pytorch_model.fp16.safetensors"},
                                                    {"text_encoder", "text_encoder/model.fp16.safetensors"}};
  for (const auto& [component, file] : files) {
    const SafetensorsFile f = SafetensorsFile::open(model / file);
    const auto& tensors = manifest["components"][component]["tensors"];
    EXPECT_EQ(f.tensors().size(), tensors.size()) << component;
    for (const auto& [name, t] : tensors.items()) {
      ASSERT_TRUE(f.contains(name)) << component << ": " << name;
      EXPECT_EQ(f.info(name).shape, t["shape"].get<Shape>()) << name;
    }
  }

  const auto pipeline = Txt2ImgPipeline::from_folder(ModelFolder::locate(model));
  GenerateRequest req;
  req.prompt = "a photo of a cat";
  PipelineTrace trace;
  const GenerateResult r = pipeline->run(req, 1, {}, &trace);
  ASSERT_EQ(r.rgb.size(), 256u * 256 * 3);
  ASSERT_EQ(trace.latents.size(), 4u);
  for (int64_t i = 0; i < trace.decoded.numel(); ++i) ASSERT_TRUE(std::isfinite(trace.decoded.data()[i])) << i;
  const auto [lo, hi] = std::minmax_element(r.rgb.begin(), r.rgb.end());
  EXPECT_LT(*lo, *hi) << "a constant image";
}

}  // namespace
}  // namespace lcmd
