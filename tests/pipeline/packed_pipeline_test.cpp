// Packed models (`lcmd pack`) generate what the model they were packed from generates: an fp32
// pack reproduces diffusers' golden runs and the folder's images bit for bit; a single-file
// checkpoint packed with a LoRA merged reproduces the diffusers LoRA runs; the default ("auto")
// pack stores the text encoder's and UNet's matrices in bf16, exactly the values the default
// bf16 precision computes with, so its images equal the folder's at that precision.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/packed_model.h"
#include "models/config.h"
#include "ops/ops.h"
#include "pipeline/pack.h"
#include "golden_runs.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

fs::path tiny_lcm() { return test::golden_dir() / "tiny-lcm"; }

GenerateResult generate(const fs::path& model, const nlohmann::json& run, const std::string& precision = "fp32",
                        const std::vector<LoraSpec>& loras = {}) {
  EngineOptions options;
  options.precision = precision;
  options.loras = loras;
  GenerateRequest req = test::request_of(run);
  req.seed = run["seed"].get<uint64_t>();
  return Engine::load(model, options)->generate(req);
}

TEST(PackedPipeline, Fp32PackReproducesTheGoldenRunsAndTheFolderBitForBit) {
  test::TempDir dir;
  const fs::path packed = dir.path() / "tiny.lcmd";
  PackOptions options;
  options.dtype = "fp32";
  const PackSummary summary = pack_model(tiny_lcm(), packed, options);
  EXPECT_EQ(summary.file_bytes, fs::file_size(packed));
  EXPECT_GT(summary.tensors, 800u);

  const ops::StoredWeightsUse before = ops::stored_weights_use();
  EngineOptions fp32;
  fp32.precision = "fp32";
  Engine::load(packed, fp32);
  EXPECT_GT(ops::stored_weights_use().in_place, before.in_place + 100) << "layers did not use the file in place";
  EXPECT_EQ(ops::stored_weights_use().relaid_out, before.relaid_out) << "layers re-laid out their stored weights";

  const auto index = read_json_file(test::golden_dir() / "tiny-lcm-cases/index.json");
  for (int i : {5, 13}) {
    const auto& run = index["pipeline"][i];
    const GenerateResult from_pack = generate(packed, run);
    const std::string err = test::check_image_close(
        from_pack.rgb, test::golden_dir() / "tiny-lcm-cases" / run["image_uint8"].get<std::string>());
    EXPECT_TRUE(err.empty()) << run["dir"] << ": " << err;
    EXPECT_EQ(from_pack.png, generate(tiny_lcm(), run).png) << run["dir"];
  }
}

TEST(PackedPipeline, LoraPacksAndSingleFilePacksReproduceDiffusers) {
  test::TempDir dir;
  const fs::path packed = dir.path() / "sd-lcm-lora.lcmd";
  PackOptions options;
  options.dtype = "fp32";
  options.loras = {{test::golden_dir() / "tiny-sd-lora/lora.safetensors", 1.0}};
  pack_model(test::golden_dir() / "tiny-sd", packed, options);
  const nlohmann::json header = PackedModelFile::open(packed).header();
  EXPECT_EQ(header["loras"][0]["file"], "lora.safetensors");
  EXPECT_EQ(header["pipeline_class"], "StableDiffusionPipeline");

  const auto index = read_json_file(test::golden_dir() / "tiny-sd-cases/index.json");
  for (const auto& run : index["runs"]) {
    if (run["lora_scale"] != 1.0) continue;
    const GenerateResult r = generate(packed, run);
    const std::string err =
        test::check_image_close(r.rgb, test::golden_dir() / "tiny-sd-cases" / run["image_uint8"].get<std::string>());
    EXPECT_TRUE(err.empty()) << run["dir"] << ": " << err;
  }
  // A LoRA given at load on top of a packed model merges into its (unpacked) weights.
  const fs::path base = dir.path() / "sd.lcmd";
  PackOptions base_options;
  base_options.dtype = "fp32";
  pack_model(test::golden_dir() / "tiny-sd", base, base_options);
  for (const auto& run : index["runs"]) {
    if (run["lora_scale"] != 0.5) continue;
    const GenerateResult r = generate(base, run, "fp32", {{test::golden_dir() / "tiny-sd-lora/lora.safetensors", 0.5}});
    const std::string err =
        test::check_image_close(r.rgb, test::golden_dir() / "tiny-sd-cases" / run["image_uint8"].get<std::string>());
    EXPECT_TRUE(err.empty()) << run["dir"] << ": " << err;
  }
  // The tiny-lcm single-file checkpoint packs too, and generates the folder's golden image.
  const fs::path ldm = dir.path() / "ldm.lcmd";
  PackOptions ldm_options;
  ldm_options.dtype = "fp32";
  ldm_options.config_dir = tiny_lcm();  // the tiny widths are not SD1.5's defaults
  pack_model(test::golden_dir() / "tiny-lcm-ldm.safetensors", ldm, ldm_options);
  const auto lcm_index = read_json_file(test::golden_dir() / "tiny-lcm-cases/index.json");
  const auto& run = lcm_index["pipeline"][5];
  const std::string err = test::check_image_close(
      generate(ldm, run).rgb, test::golden_dir() / "tiny-lcm-cases" / run["image_uint8"].get<std::string>());
  EXPECT_TRUE(err.empty()) << err;
}

TEST(PackedPipeline, AutoPackStoresTheDefaultPrecisionsDtypes) {
  test::TempDir dir;
  const fs::path packed = dir.path() / "auto.lcmd";
  pack_model(tiny_lcm(), packed, PackOptions{});
  const PackedModelFile file = PackedModelFile::open(packed);
  auto dtype_of = [&](const std::string& name) {
    const PackedTensor* t = file.find(name);
    EXPECT_NE(t, nullptr) << name;
    return t ? t->dtype : DType::BOOL;
  };
  EXPECT_EQ(dtype_of("unet.conv_in.weight"), DType::BF16);
  EXPECT_EQ(dtype_of("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"), DType::BF16);
  EXPECT_EQ(dtype_of("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight"), DType::BF16);
  EXPECT_EQ(dtype_of("unet.conv_in.bias"), DType::F32);
  EXPECT_EQ(dtype_of("unet.conv_norm_out.weight"), DType::F32);
  EXPECT_EQ(dtype_of("text_encoder.text_model.embeddings.token_embedding.weight"), DType::F32);
  EXPECT_EQ(dtype_of("vae.decoder.conv_in.weight"), DType::BF16);  // thin: bf16 direct
  EXPECT_EQ(dtype_of("vae.decoder.up_blocks.0.resnets.0.conv1.weight"), DType::BF16);  // Winograd-transformed
  EXPECT_EQ(file.find("vae.encoder.conv_in.weight"), nullptr);  // the engine never reads the encoder
  // The values loading copies out (norms, biases, embeddings) lie in one run after the layers,
  // so a cold start reads them sequentially.
  uint64_t last_layer = 0, first_value = UINT64_MAX;
  for (const PackedTensor& t : file.tensors()) {
    if (t.layout == kBlockedLayout) last_layer = std::max(last_layer, t.offset);
    else first_value = std::min(first_value, t.offset);
  }
  EXPECT_LT(last_layer, first_value);

  if (ops::runnable_precision(Precision::BF16) != Precision::BF16) GTEST_SKIP() << "this CPU computes bf16 in fp32";
  const ops::StoredWeightsUse before = ops::stored_weights_use();
  EngineOptions bf16;
  bf16.precision = "bf16";
  Engine::load(packed, bf16);
  EXPECT_GT(ops::stored_weights_use().in_place, before.in_place + 100);
  EXPECT_EQ(ops::stored_weights_use().relaid_out, before.relaid_out);
  const auto index = read_json_file(test::golden_dir() / "tiny-lcm-cases/index.json");
  const auto& run = index["pipeline"][5];
  EXPECT_EQ(generate(packed, run, "bf16").png, generate(tiny_lcm(), run, "bf16").png);
}

// The int8 mode quantizes a packed model's stored UNet layers (bf16) at load and runs the VAE's
// Winograd-transformed weights as they are: its image stays within the int8 bound of the fp32
// engine's (30 dB PSNR).
TEST(PackedPipeline, AutoPackRunsInt8) {
  if (ops::runnable_precision(Precision::INT8) != Precision::INT8) GTEST_SKIP() << "this CPU has no VNNI";
  test::TempDir dir;
  const fs::path packed = dir.path() / "auto.lcmd";
  pack_model(tiny_lcm(), packed, PackOptions{});
  const auto index = read_json_file(test::golden_dir() / "tiny-lcm-cases/index.json");
  const auto& run = index["pipeline"][5];
  const GenerateResult exact = generate(tiny_lcm(), run), int8 = generate(packed, run, "int8");
  ASSERT_EQ(exact.rgb.size(), int8.rgb.size());
  double squared = 0;
  for (size_t i = 0; i < exact.rgb.size(); ++i) squared += std::pow(double(exact.rgb[i]) - int8.rgb[i], 2);
  const double mse = squared / static_cast<double>(exact.rgb.size());
  EXPECT_GT(mse, 0.0) << "int8 should not be bit-identical to fp32: is it running?";
  EXPECT_GE(10 * std::log10(255.0 * 255.0 / mse), 30.0);
}

TEST(PackedPipeline, BadPackRequestsChangeNothing) {
  test::TempDir dir;
  const fs::path out = dir.path() / "x.lcmd";
  PackOptions options;
  options.dtype = "int4";
  EXPECT_THROW(pack_model(tiny_lcm(), out, options), InputError);
  options.dtype = "auto";
  EXPECT_THROW(pack_model(dir.path() / "no-such-model", out, options), ModelError);
  options.loras = {{dir.path() / "missing-lora.safetensors", 1.0}};
  EXPECT_THROW(pack_model(tiny_lcm(), out, options), ModelError);
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a failed pack left a file behind";
}

}  // namespace
}  // namespace lcmd
