// Bad configs and bad weights: a clear ModelError naming the file, field or tensor.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "models/unet.h"
#include "models/vae.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

nlohmann::json tiny_unet_config() { return read_json_file(test::golden_dir() / "tiny-lcm/unet/config.json"); }

std::string model_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "(no ModelError)";
}

TEST(Config, ReadsTheGoldenWidthsFromTheConfig) {
  const UNetConfig c = UNetConfig::from_json(tiny_unet_config(), "unet/config.json");
  EXPECT_EQ(c.block_out_channels, (std::vector<int>{32, 32, 32, 64}));
  EXPECT_EQ(c.num_attention_heads, (std::vector<int>{4, 4, 4, 4}));  // attention_head_dim means heads
  EXPECT_EQ(c.cross_attention_dim, 16);
  ASSERT_TRUE(c.time_cond_proj_dim.has_value());
  EXPECT_EQ(*c.time_cond_proj_dim, 32);
  EXPECT_EQ(c.time_embedding_dim, 128);
  const UNetConfig full = UNetConfig::from_json(read_json_file(test::shared_dir() / "sd15/unet/config.json"), "sd15");
  EXPECT_EQ(full.block_out_channels, (std::vector<int>{320, 640, 1280, 1280}));
  EXPECT_EQ(full.num_attention_heads, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(*full.time_cond_proj_dim, 256);
}

TEST(Config, WrongTypesAndUnsupportedValuesNameTheField) {
  auto j = tiny_unet_config();
  j["block_out_channels"] = "wide";
  EXPECT_NE(model_error([&] { UNetConfig::from_json(j, "unet/config.json"); }).find("block_out_channels"),
            std::string::npos);
  j = tiny_unet_config();
  j["norm_num_groups"] = 7;
  EXPECT_NE(model_error([&] { UNetConfig::from_json(j, "unet/config.json"); }).find("norm_num_groups"),
            std::string::npos);
  j = tiny_unet_config();
  j["use_linear_projection"] = true;
  EXPECT_NE(model_error([&] { UNetConfig::from_json(j, "unet/config.json"); }).find("use_linear_projection"),
            std::string::npos);
  j = tiny_unet_config();
  j["down_block_types"][0] = "SimpleCrossAttnDownBlock2D";
  EXPECT_NE(model_error([&] { UNetConfig::from_json(j, "unet/config.json"); }).find("SimpleCrossAttnDownBlock2D"),
            std::string::npos);
  j = tiny_unet_config();
  j.erase("block_out_channels");
  EXPECT_NE(model_error([&] { UNetConfig::from_json(j, "unet/config.json"); }).find("unet/config.json"),
            std::string::npos);
  auto v = read_json_file(test::golden_dir() / "tiny-lcm/vae/config.json");
  v["scaling_factor"] = -1;
  EXPECT_NE(model_error([&] { VaeConfig::from_json(v, "vae/config.json"); }).find("scaling_factor"), std::string::npos);
}

TEST(Config, UnreadableJsonNamesTheFile) {
  test::TempDir dir;
  std::ofstream(dir.path() / "config.json") << "{\"block_out_channels\": [32,";
  EXPECT_NE(model_error([&] { read_json_file(dir.path() / "config.json"); }).find("config.json"), std::string::npos);
  EXPECT_NE(model_error([&] { read_json_file(dir.path() / "absent.json"); }).find("absent.json"), std::string::npos);
}

// A copy of the tiny VAE with one tensor dropped or reshaped.
fs::path write_altered_vae(const fs::path& dir, const std::string& victim, bool drop) {
  const SafetensorsFile src = SafetensorsFile::open(test::golden_dir() / "tiny-lcm/vae/diffusion_pytorch_model.safetensors");
  std::vector<Tensor> keep;
  std::vector<TensorToWrite> out;
  for (const TensorInfo& t : src.tensors()) {
    if (t.name == victim && drop) continue;
    Shape shape = t.shape;
    if (t.name == victim) shape = {shape_numel(shape)};
    keep.push_back(src.load_f32(t.name, t.shape));
    out.push_back({t.name, shape, keep.back().data(), DType::F32});
  }
  const fs::path file = dir / "vae.safetensors";
  write_safetensors(file, out);
  return file;
}

TEST(Weights, MissingTensorIsNamed) {
  test::TempDir dir;
  const std::string victim = "decoder.up_blocks.1.resnets.2.conv2.weight";
  const fs::path file = write_altered_vae(dir.path(), victim, /*drop=*/true);
  const auto cfg = VaeConfig::from_json(read_json_file(test::golden_dir() / "tiny-lcm/vae/config.json"), "vae");
  const SafetensorsSource weights(file);
  const std::string msg = model_error([&] { VaeDecoder(cfg, Weights(weights)); });
  EXPECT_NE(msg.find(victim), std::string::npos) << msg;
  EXPECT_NE(msg.find("vae.safetensors"), std::string::npos) << msg;
}

TEST(Weights, WrongShapeIsNamed) {
  test::TempDir dir;
  const std::string victim = "decoder.mid_block.attentions.0.to_q.weight";
  const fs::path file = write_altered_vae(dir.path(), victim, /*drop=*/false);
  const auto cfg = VaeConfig::from_json(read_json_file(test::golden_dir() / "tiny-lcm/vae/config.json"), "vae");
  const SafetensorsSource weights(file);
  const std::string msg = model_error([&] { VaeDecoder(cfg, Weights(weights)); });
  EXPECT_NE(msg.find(victim), std::string::npos) << msg;
}

TEST(Weights, ConfigWiderThanTheWeightsIsRefused) {
  auto j = tiny_unet_config();
  j["block_out_channels"] = {64, 64, 64, 64};
  const UNetConfig cfg = UNetConfig::from_json(j, "unet/config.json");
  const SafetensorsSource weights(test::golden_dir() / "tiny-lcm/unet/diffusion_pytorch_model.safetensors");
  const std::string msg = model_error([&] { UNet2DConditionModel(cfg, Weights(weights)); });
  EXPECT_NE(msg.find("diffusion_pytorch_model.safetensors"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lcmd
