// The fast precisions against the fp32 engine and diffusers' numbers, with the bounds of issue 3:
// bf16: UNet rel L2 <= 1e-2 on every golden UNet case, image PSNR >= 35 dB vs fp32;
// int8: UNet rel L2 <= 3e-2, image PSNR >= 30 dB.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/cpu.h"
#include "core/error.h"
#include "models/blocks.h"
#include "models/unet.h"
#include "ops/ops.h"
#include "pipeline/precision.h"
#include "pipeline/txt2img.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

fs::path cases_dir() { return test::golden_dir() / "tiny-lcm-cases"; }

double psnr(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  double se = 0;
  for (size_t i = 0; i < a.size(); ++i) se += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  const double mse = se / static_cast<double>(a.size());
  return mse == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 / mse);
}

struct Mode {
  const char* name;
  double unet_rel_l2;
  double min_psnr_db;
};

void PrintTo(const Mode& m, std::ostream* os) { *os << m.name; }

class PrecisionAccuracy : public ::testing::TestWithParam<Mode> {};

TEST_P(PrecisionAccuracy, UNetOnEveryGoldenCase) {
  const Mode mode = GetParam();
  const PipelinePrecision precision = resolve_precision(mode.name, cpu_info());
  if (precision.unet == Precision::FP32) GTEST_SKIP() << mode.name << " does not run on this CPU";
  const auto config = UNetConfig::from_json(read_json_file(test::golden_dir() / "tiny-lcm/unet/config.json"), "unet");
  const SafetensorsSource weights(test::golden_dir() / "tiny-lcm/unet/diffusion_pytorch_model.safetensors");
  const UNet2DConditionModel unet(config, Weights(weights, precision.unet));
  const auto cases = read_json_file(cases_dir() / "index.json")["unet"];
  ASSERT_EQ(cases.size(), 5u);
  for (const auto& c : cases) {
    const Tensor sample = to_nhwc(test::load_npy_tensor(cases_dir() / c["sample"].get<std::string>()));
    const Tensor context = test::load_npy_tensor(cases_dir() / c["encoder_hidden_states"].get<std::string>());
    const Tensor cond = test::load_npy_tensor(cases_dir() / c["timestep_cond"].get<std::string>());
    const Tensor ref = test::load_npy_tensor(cases_dir() / c["noise_pred"].get<std::string>());
    const Tensor out = to_nchw(unet.forward(sample, c["timestep"].get<int>(), context, &cond));
    const double err = test::rel_l2(out.data(), ref.data(), static_cast<size_t>(ref.numel()));
    EXPECT_LE(err, mode.unet_rel_l2) << mode.name << " " << c["name"].get<std::string>();
    EXPECT_GT(err, 0.0) << mode.name << " should not be bit-identical to fp32: is it really running?";
  }
}

TEST_P(PrecisionAccuracy, ImagesAgainstTheFp32Engine) {
  const Mode mode = GetParam();
  const PipelinePrecision precision = resolve_precision(mode.name, cpu_info());
  if (precision.unet == Precision::FP32) GTEST_SKIP() << mode.name << " does not run on this CPU";
  const ModelFolder folder = ModelFolder::locate(test::golden_dir() / "tiny-lcm");
  const auto fp32 = Txt2ImgPipeline::from_folder(folder);
  const auto fast = Txt2ImgPipeline::from_folder(folder, precision);
  for (const int size : {256, 512}) {
    GenerateRequest req;
    req.prompt = "a photo of a cat";
    req.width = req.height = size;
    const GenerateResult a = fp32->run(req, 42), b = fast->run(req, 42);
    EXPECT_GE(psnr(a.rgb, b.rgb), mode.min_psnr_db) << mode.name << " at " << size;
  }
}

// Which precision each model runs at per mode, on a CPU with AVX512-BF16 and VNNI (as oneDNN
// sees this one) and on one without: only the fp32 mode keeps the VAE exact; the int8 mode runs
// the UNet and the VAE int8, the text encoder bf16.
TEST(PrecisionModes, EachModelsPrecisionPerMode) {
  CpuInfo fast_cpu = cpu_info();
  fast_cpu.avx512_bf16 = true;
  const PipelinePrecision bf16 = resolve_precision("bf16", fast_cpu), int8 = resolve_precision("int8", fast_cpu);
  EXPECT_EQ(bf16.vae, bf16.unet);  // bf16 (Winograd) where the CPU has it, else both fp32
  EXPECT_EQ(int8.vae, int8.unet);  // int8 too
  EXPECT_EQ(int8.unet, ops::runnable_precision(Precision::INT8));
  EXPECT_EQ(resolve_precision("fp32", fast_cpu).vae, Precision::FP32);
  CpuInfo plain_cpu = cpu_info();
  plain_cpu.avx512_bf16 = plain_cpu.amx = false;
  EXPECT_EQ(resolve_precision("auto", plain_cpu).unet, Precision::FP32);
  EXPECT_THROW(resolve_precision("int4", fast_cpu), InputError);
}

// In the int8 mode the UNet's 3x3 convolutions and matrix products run int8, its 1x1
// convolutions (a resnet's conv_shortcut over the skip concatenation, a transformer's proj_in
// and proj_out) bf16.
TEST(PrecisionModes, Int8UNetKeepsItsPointwiseConvolutionsBf16) {
  if (ops::runnable_precision(Precision::INT8) != Precision::INT8) GTEST_SKIP() << "this CPU has no VNNI";
  const auto config = UNetConfig::from_json(read_json_file(test::golden_dir() / "tiny-lcm/unet/config.json"), "unet");
  const SafetensorsSource weights(test::golden_dir() / "tiny-lcm/unet/diffusion_pytorch_model.safetensors");
  const Weights unet(weights, Precision::INT8);
  const Precision bf16 = ops::runnable_precision(Precision::BF16);
  // up_blocks.0.resnets.0: the widest up path concatenated with its skip connection.
  const int width = config.block_out_channels.back();
  const ResnetBlock2D resnet(unet["up_blocks"][0]["resnets"][0], 2 * width, width, config.time_embedding_dim,
                             config.norm_num_groups, config.norm_eps);
  EXPECT_EQ(resnet.conv1.precision(), Precision::INT8);
  EXPECT_EQ(resnet.conv2.precision(), Precision::INT8);
  EXPECT_EQ(resnet.time_emb_proj->precision(), Precision::INT8);
  ASSERT_TRUE(resnet.conv_shortcut.has_value());
  EXPECT_EQ(resnet.conv_shortcut->precision(), bf16);
  const int channels = config.block_out_channels[0];
  const Transformer2DModel transformer(unet["down_blocks"][0]["attentions"][0], channels, config.num_attention_heads[0],
                                       config.cross_attention_dim, config.transformer_layers_per_block[0],
                                       config.norm_num_groups);
  EXPECT_EQ(transformer.proj_in.precision(), bf16);
  EXPECT_EQ(transformer.proj_out.precision(), bf16);
  const BasicTransformerBlock& block = transformer.transformer_blocks.at(0);
  EXPECT_EQ(block.attn1.to_q.precision(), Precision::INT8);
  EXPECT_EQ(block.attn2.to_k.precision(), Precision::INT8);
  EXPECT_EQ(block.ff_proj.precision(), Precision::INT8);
  EXPECT_EQ(block.ff_out.precision(), Precision::INT8);
}

INSTANTIATE_TEST_SUITE_P(FastModes, PrecisionAccuracy,
                         ::testing::Values(Mode{"bf16", 1e-2, 35.0}, Mode{"int8", 3e-2, 30.0}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace lcmd
