// TAESD (diffusers AutoencoderTiny decoder) against ../shared/golden/tiny-taesd-cases: decoded
// outputs and intermediates within the fp32 bounds (rel L2 <= 1e-4, max abs <= 1e-3 * max|ref|),
// the pipeline runs' images, config errors, and madebyollin's original weight names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "models/taesd.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::check_close;
using test::golden_dir;
using test::load_npy;
using test::load_npy_tensor;

fs::path model_dir() { return golden_dir() / "tiny-taesd"; }
fs::path weights_file() { return model_dir() / "diffusion_pytorch_model.safetensors"; }
fs::path cases_dir() { return golden_dir() / "tiny-taesd-cases"; }
json golden_config_json() { return read_json_file(model_dir() / "config.json"); }
TaesdConfig golden_config() { return TaesdConfig::from_json(golden_config_json(), "tiny-taesd/config.json"); }
json index() { return read_json_file(cases_dir() / "index.json"); }

std::string model_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "(no ModelError)";
}

// Our NHWC output against a reference NCHW .npy, within the fp32 bounds.
void expect_close(const Tensor& ours_nhwc, const fs::path& ref_file, const std::string& what) {
  const Tensor ref = load_npy_tensor(ref_file);
  const Tensor out = to_nchw(ours_nhwc);
  ASSERT_EQ(out.shape(), ref.shape()) << what;
  const std::string err = check_close(out.data(), ref.data(), static_cast<size_t>(ref.numel()));
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

// x[..., ::stride, ::stride] of an NCHW tensor.
Tensor strided_nchw(const Tensor& x, int64_t stride) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t sh = (h + stride - 1) / stride, sw = (w + stride - 1) / stride;
  Tensor y({n, c, sh, sw});
  for (int64_t p = 0; p < n * c; ++p)
    for (int64_t i = 0; i < sh; ++i)
      for (int64_t j = 0; j < sw; ++j) y.data()[(p * sh + i) * sw + j] = x.data()[(p * h + i * stride) * w + j * stride];
  return y;
}

// The pipeline's postprocess (as image/postprocess.h does it, which this test program does not
// link): clamp(x / 2 + 0.5, 0, 1) in float32, * 255, round half to even.
std::vector<uint8_t> to_uint8_hwc(const Tensor& decoded_nhwc) {
  std::vector<uint8_t> out(decoded_nhwc.numel());
  for (int64_t i = 0; i < decoded_nhwc.numel(); ++i) {
    const float v = std::min(std::max(decoded_nhwc.data()[i] / 2.0f + 0.5f, 0.0f), 1.0f);
    out[i] = static_cast<uint8_t>(std::nearbyint(v * 255.0f));
  }
  return out;
}

// ---- Config ----

TEST(TaesdConfig, ReadsTheGoldenConfig) {
  const TaesdConfig c = golden_config();
  EXPECT_EQ(c.channels(), 16);
  EXPECT_EQ(c.decoder_block_out_channels, (std::vector<int>{16, 16, 16, 16}));
  EXPECT_EQ(c.num_decoder_blocks, (std::vector<int>{3, 3, 3, 1}));
  EXPECT_EQ(c.latent_channels, 4);
  EXPECT_EQ(c.out_channels, 3);
  EXPECT_EQ(c.scaling_factor, 1.0f);
}

TEST(TaesdConfig, DefaultsAreMadebyollinsTaesd) {
  const TaesdConfig c = TaesdConfig::from_json(json::object(), "config.json");
  EXPECT_EQ(c.decoder_block_out_channels, (std::vector<int>{64, 64, 64, 64}));
  EXPECT_EQ(c.num_decoder_blocks, (std::vector<int>{3, 3, 3, 1}));
  EXPECT_EQ(c.scaling_factor, 1.0f);
}

TEST(TaesdConfig, AcceptsTheShippedFileLayoutAndNulls) {
  json j = golden_config_json();
  j.erase("block_out_channels");  // madebyollin's config.json lacks it
  j["_name_or_path"] = "madebyollin/taesd";
  j["force_upcast"] = nullptr;
  j["shift_factor"] = 0;
  EXPECT_EQ(TaesdConfig::from_json(j, "config.json").channels(), 16);
}

TEST(TaesdConfig, UnsupportedOrMalformedValuesNameTheField) {
  struct Case {
    std::string field;
    json value;
  };
  const std::vector<Case> cases = {
      {"upsample_fn", "bilinear"},
      {"act_fn", "silu"},
      {"upsampling_scaling_factor", 3},
      {"shift_factor", 0.1159},
      {"decoder_block_out_channels", {16, 16, 32, 16}},  // unequal widths
      {"decoder_block_out_channels", {16, 16, 16}},      // not 4 stages
      {"decoder_block_out_channels", "16"},
      {"num_decoder_blocks", {3, 3, 3}},
      {"num_decoder_blocks", {3, -1, 3, 1}},
      {"block_out_channels", {32, 32, 32, 32}},  // contradicts decoder_block_out_channels
      {"latent_channels", "4"},
      {"latent_channels", 0},
      {"scaling_factor", -1.0},
      {"force_upcast", "no"},
      {"encoder_block_out_channels", {16, "x"}},
      {"_class_name", "AutoencoderKL"},
  };
  for (const Case& c : cases) {
    json j = golden_config_json();
    j[c.field] = c.value;
    const std::string msg = model_error([&] { TaesdConfig::from_json(j, "taesd/config.json"); });
    EXPECT_NE(msg.find("taesd/config.json"), std::string::npos) << c.field << " = " << c.value.dump() << ": " << msg;
    EXPECT_NE(msg.find("'" + c.field + "'"), std::string::npos) << c.field << " = " << c.value.dump() << ": " << msg;
  }
  EXPECT_NE(model_error([] { TaesdConfig::from_json(json::array(), "taesd/config.json"); }).find("JSON object"),
            std::string::npos);
}

// ---- Decoder against diffusers ----

class TaesdGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    weights_ = new SafetensorsSource(weights_file());
    decoder_ = new TaesdDecoder(golden_config(), Weights(*weights_));
  }
  static void TearDownTestSuite() {
    delete decoder_;
    delete weights_;
  }
  static Tensor latents(const json& c) {
    return to_nhwc(load_npy_tensor(cases_dir() / c["latents"].get<std::string>()));
  }
  static SafetensorsSource* weights_;
  static TaesdDecoder* decoder_;
};
SafetensorsSource* TaesdGolden::weights_ = nullptr;
TaesdDecoder* TaesdGolden::decoder_ = nullptr;

TEST_F(TaesdGolden, FullDecodeAndIntermediatesMatchDiffusers) {
  const json c = index()["decoder"][0];
  ASSERT_EQ(c["name"].get<std::string>(), "dec_32x32");
  std::vector<std::pair<std::string, Tensor>> trace;
  decoder_->trace = &trace;
  const Tensor out = decoder_->forward(latents(c));
  decoder_->trace = nullptr;
  EXPECT_EQ(out.shape(), (Shape{1, 256, 256, 3}));
  expect_close(out, cases_dir() / c["decoded"].get<std::string>(), "dec_32x32 decoded");
  // The reference names its intermediates relative to the decoder ("layers.0", "clamped_input").
  int compared = 0;
  for (const auto& [module, tensor] : trace) {
    const std::string key = module.substr(std::string("decoder.").size());
    if (!c["intermediates"].contains(key)) continue;
    expect_close(tensor, cases_dir() / c["intermediates"][key].get<std::string>(), "dec_32x32 " + module);
    ++compared;
  }
  EXPECT_EQ(compared, 4);
  EXPECT_EQ(trace.size(), 20u) << "the clamped input and decoder.layers.0-18";
}

TEST_F(TaesdGolden, LargerAndNonSquareDecodesMatchOnTheStridedGrid) {
  const json cases = index()["decoder"];
  ASSERT_EQ(cases.size(), 3u);
  for (size_t i = 1; i < cases.size(); ++i) {
    const json& c = cases[i];
    const Tensor out = to_nchw(decoder_->forward(latents(c)));
    const Shape full = c["decoded_full_shape"].get<Shape>();
    ASSERT_EQ(out.shape(), full) << c["name"];
    const Tensor ref = load_npy_tensor(cases_dir() / c["decoded_strided"].get<std::string>());
    const Tensor ours = strided_nchw(out, 3);
    ASSERT_EQ(ours.shape(), ref.shape()) << c["name"];
    const std::string err = check_close(ours.data(), ref.data(), static_cast<size_t>(ref.numel()));
    EXPECT_TRUE(err.empty()) << c["name"] << ": " << err;
  }
}

// The pipeline hands TAESD `denoised` unchanged (scaling_factor 1.0); most of these inputs are far
// outside the soft clamp's linear range, unlike the decoder-only cases.
TEST_F(TaesdGolden, PipelineVaeInputsGiveDiffusersImages) {
  const json runs = index()["pipeline"];
  ASSERT_EQ(runs.size(), 3u);
  for (const json& r : runs) {
    const Tensor out = decoder_->forward(to_nhwc(load_npy_tensor(cases_dir() / r["vae_input"].get<std::string>())));
    const test::Npy ref = load_npy(cases_dir() / r["image_uint8"].get<std::string>());
    const std::vector<uint8_t> ours = to_uint8_hwc(out);
    ASSERT_EQ(ours.size(), ref.u8.size()) << r["dir"];
    int max_diff = 0;
    double sum_diff = 0;
    for (size_t k = 0; k < ours.size(); ++k) {
      const int d = std::abs(int(ours[k]) - int(ref.u8[k]));
      max_diff = std::max(max_diff, d);
      sum_diff += d;
    }
    EXPECT_LE(max_diff, 2) << r["dir"];
    EXPECT_LE(sum_diff / ours.size(), 0.01) << r["dir"];
  }
}

TEST_F(TaesdGolden, RefusesLatentsOfTheWrongShape) {
  EXPECT_THROW(decoder_->forward(Tensor::zeros({1, 8, 8, 3})), std::invalid_argument);
  EXPECT_THROW(decoder_->forward(Tensor::zeros({8, 8, 4})), std::invalid_argument);
}

// ---- Weights: errors and madebyollin's original file ----

// The golden decoder's tensors under madebyollin's names (decoder.layers.N... -> N+1...), as
// taesd_decoder.safetensors holds them; `drop` names a diffusers tensor to leave out.
fs::path write_original_style_decoder(const fs::path& dir, const std::string& drop = "") {
  const SafetensorsFile src = SafetensorsFile::open(weights_file());
  std::vector<Tensor> keep;
  std::vector<std::string> names;
  for (const TensorInfo& t : src.tensors()) {
    const std::string renamed = OriginalTaesdDecoderSource::original_name(t.name);
    if (renamed.empty() || t.name == drop) continue;  // encoder tensors are not in the decoder file
    keep.push_back(src.load_f32(t.name, t.shape));
    names.push_back(renamed);
  }
  std::vector<TensorToWrite> out;
  for (size_t i = 0; i < keep.size(); ++i) out.push_back({names[i], keep[i].shape(), keep[i].data(), DType::F32});
  const fs::path file = dir / "taesd_decoder.safetensors";
  write_safetensors(file, out);
  return file;
}

TEST(TaesdWeights, OriginalNamesAreTheDiffusersIndexPlusOne) {
  EXPECT_EQ(OriginalTaesdDecoderSource::original_name("decoder.layers.0.weight"), "1.weight");
  EXPECT_EQ(OriginalTaesdDecoderSource::original_name("decoder.layers.17.conv.4.bias"), "18.conv.4.bias");
  EXPECT_EQ(OriginalTaesdDecoderSource::original_name("decoder.layers.18.bias"), "19.bias");
  EXPECT_EQ(OriginalTaesdDecoderSource::original_name("encoder.layers.0.weight"), "");
  EXPECT_EQ(OriginalTaesdDecoderSource::original_name("decoder.layers.x.weight"), "");
  EXPECT_EQ(OriginalTaesdDecoderSource::original_name("decoder.layers.3"), "");
}

TEST(TaesdWeights, OriginalStyleFileGivesTheSameDecode) {
  test::TempDir dir;
  const fs::path file = write_original_style_decoder(dir.path());
  const SafetensorsSource diffusers_file(weights_file());
  auto original_file = std::make_unique<SafetensorsSource>(file);
  EXPECT_TRUE(has_original_taesd_decoder_names(*original_file));
  EXPECT_FALSE(has_original_taesd_decoder_names(diffusers_file));
  const OriginalTaesdDecoderSource renamed(std::move(original_file));

  const TaesdDecoder from_diffusers(golden_config(), Weights(diffusers_file));
  const TaesdDecoder from_original(golden_config(), Weights(renamed));
  const json c = index()["decoder"][0];
  const Tensor z = to_nhwc(load_npy_tensor(cases_dir() / c["latents"].get<std::string>()));
  const Tensor a = from_diffusers.forward(z), b = from_original.forward(z);
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()), 0) << "same tensors must decode identically";
  expect_close(b, cases_dir() / c["decoded"].get<std::string>(), "original-style file decoded");
}

TEST(TaesdWeights, MissingTensorOfAnOriginalFileIsNamedBothWays) {
  test::TempDir dir;
  const fs::path file = write_original_style_decoder(dir.path(), "decoder.layers.2.conv.0.weight");
  const OriginalTaesdDecoderSource renamed(std::make_unique<SafetensorsSource>(file));
  const std::string msg = model_error([&] { TaesdDecoder(golden_config(), Weights(renamed)); });
  EXPECT_NE(msg.find("'3.conv.0.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("decoder.layers.2.conv.0.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("taesd_decoder.safetensors"), std::string::npos) << msg;
}

TEST(TaesdWeights, DiffusersFileBehindTheRenamingSourceIsRefused) {
  const OriginalTaesdDecoderSource renamed(std::make_unique<SafetensorsSource>(weights_file()));
  const std::string msg = model_error([&] { TaesdDecoder(golden_config(), Weights(renamed)); });
  EXPECT_NE(msg.find("'1.weight'"), std::string::npos) << msg;
}

TEST(TaesdWeights, ConfigWiderThanTheWeightsNamesFileAndTensor) {
  json j = golden_config_json();
  j["decoder_block_out_channels"] = {64, 64, 64, 64};
  j["block_out_channels"] = {64, 64, 64, 64};
  const TaesdConfig wide = TaesdConfig::from_json(j, "config.json");
  const SafetensorsSource weights(weights_file());
  const std::string msg = model_error([&] { TaesdDecoder(wide, Weights(weights)); });
  EXPECT_NE(msg.find("diffusion_pytorch_model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("decoder.layers.0.weight"), std::string::npos) << msg;
}

TEST(TaesdWeights, RandomFullSizeDecoderHasTheDiffusersParameterNames) {
  const RandomSource random(7);
  const TaesdDecoder decoder(TaesdConfig{}, Weights(random));
  // 5 convs (3 without bias) and 10 blocks of 3 convs with bias: 5 + 2 + 60 tensors.
  ASSERT_EQ(random.requested().size(), 67u);
  EXPECT_EQ(random.requested().front().name, "decoder.layers.0.weight");
  EXPECT_EQ(random.requested().front().shape, (Shape{64, 4, 3, 3}));
  EXPECT_EQ(random.requested().back().name, "decoder.layers.18.bias");
  EXPECT_EQ(random.requested().back().shape, (Shape{3}));
  const Tensor out = decoder.forward(Tensor::zeros({1, 2, 3, 4}));
  EXPECT_EQ(out.shape(), (Shape{1, 16, 24, 3}));
}

}  // namespace
}  // namespace lcmd
