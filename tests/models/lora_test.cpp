// LoRA merging against diffusers 0.24's fuse_lora (../shared/golden/tiny-sd-lora): every UNet
// tensor merged at scales 1.0 and 0.5 equals the fused UNet diffusers saved (<= 1e-6 relative
// per tensor), the fp16 file merges identically, a missing alpha means alpha = rank, the LDM
// names carry LoRAs too, and LoRA modules that fit no layer are reported.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/ldm_names.h"
#include "models/lora.h"
#include "models/unet.h"
#include "recording_source.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

using test::RecordingSource;

fs::path lora_dir() { return test::golden_dir() / "tiny-sd-lora"; }
fs::path base_unet_file() { return test::golden_dir() / "tiny-sd/unet/diffusion_pytorch_model.safetensors"; }

UNetConfig config_of(const fs::path& folder) {
  return UNetConfig::from_json(read_json_file(folder / "unet/config.json"), "unet config");
}

// Every UNet parameter name and shape of a model folder's config.
std::map<std::string, Shape> unet_parameters(const fs::path& folder) {
  RecordingSource rec;
  UNet2DConditionModel(config_of(folder), Weights(rec));
  return rec.requested;
}

const std::map<std::string, Shape>& tiny_sd_parameters() {
  static const auto params = unet_parameters(test::golden_dir() / "tiny-sd");
  return params;
}

bool identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

class FusedUNet : public ::testing::TestWithParam<double> {};

TEST_P(FusedUNet, EveryTensorEqualsDiffusersFuseLora) {
  const double scale = GetParam();
  const SafetensorsSource base(base_unet_file());
  const auto loras = LoraSet::load({{lora_dir() / "lora.safetensors", scale}});
  const LoraMergingSource merged(base, loras, LoraMergingSource::Component::UNet);
  const SafetensorsSource fused(lora_dir() / (scale == 1.0 ? "unet_fused_lora_scale_1.0.safetensors"
                                                           : "unet_fused_lora_scale_0.5.safetensors"));
  int changed = 0;
  for (const auto& [name, shape] : tiny_sd_parameters()) {
    const Tensor ours = merged.load(name, shape), ref = fused.load(name, shape), original = base.load(name, shape);
    if (identical(ref, original)) {
      EXPECT_TRUE(identical(ours, ref)) << name << " must stay untouched";
      continue;
    }
    ++changed;
    const double rel = test::rel_l2(ours.data(), ref.data(), ref.numel());
    EXPECT_LE(rel, 1e-6) << name;
  }
  EXPECT_EQ(changed, 277);
  EXPECT_NO_THROW(loras->check_all_applied());
}

INSTANTIATE_TEST_SUITE_P(Scales, FusedUNet, ::testing::Values(1.0, 0.5));

// Merges `lora_file` at `scale` into every tiny-sd UNet weight.
std::map<std::string, Tensor> merge_all(const fs::path& lora_file, double scale) {
  const SafetensorsSource base(base_unet_file());
  const auto loras = LoraSet::load({{lora_file, scale}});
  const LoraMergingSource merged(base, loras, LoraMergingSource::Component::UNet);
  std::map<std::string, Tensor> out;
  for (const auto& [name, shape] : tiny_sd_parameters()) out[name] = merged.load(name, shape);
  loras->check_all_applied();
  return out;
}

TEST(Lora, Fp16FileMergesBitIdentically) {
  const auto f32 = merge_all(lora_dir() / "lora.safetensors", 1.0);
  const auto f16 = merge_all(lora_dir() / "lora.fp16.safetensors", 1.0);
  for (const auto& [name, t] : f32) EXPECT_TRUE(identical(t, f16.at(name))) << name;
}

// A copy of the f32 LoRA file, its tensors passed through `edit` (return false to drop one).
fs::path rewrite_lora(const fs::path& dir, const std::string& file_name,
                      const std::function<bool(std::string& name, Tensor& t)>& edit,
                      const std::vector<std::pair<std::string, Tensor>>& extra = {}) {
  const SafetensorsFile src = SafetensorsFile::open(lora_dir() / "lora.safetensors");
  std::vector<std::string> names;
  std::vector<Tensor> tensors;
  for (const TensorInfo& t : src.tensors()) {
    std::string name = t.name;
    Tensor value = src.load_f32_as_stored(t.name);
    if (!edit(name, value)) continue;
    names.push_back(name);
    tensors.push_back(value);
  }
  for (const auto& [n, t] : extra) names.push_back(n), tensors.push_back(t);
  std::vector<TensorToWrite> out;
  for (size_t i = 0; i < names.size(); ++i) out.push_back({names[i], tensors[i].shape(), tensors[i].data()});
  write_safetensors(dir / file_name, out);
  return dir / file_name;
}

TEST(Lora, MissingAlphaMeansAlphaEqualsRank) {
  test::TempDir dir;
  const fs::path no_alpha = rewrite_lora(dir.path(), "noalpha.safetensors",
                                         [](std::string& name, Tensor&) { return !name.ends_with(".alpha"); });
  const auto with_alpha = merge_all(lora_dir() / "lora.safetensors", 1.0);
  const auto without = merge_all(no_alpha, 1.0);
  const SafetensorsSource base(base_unet_file());
  int checked = 0;
  for (const auto& [name, shape] : tiny_sd_parameters()) {
    const Tensor original = base.load(name, shape);
    if (identical(with_alpha.at(name), original)) continue;
    // Every module has alpha 3 and rank 4: the update without alpha is 4/3 of the one with it.
    std::vector<float> expected(original.numel()), got(original.numel());
    for (int64_t i = 0; i < original.numel(); ++i) {
      expected[i] = (with_alpha.at(name).data()[i] - original.data()[i]) / 0.75f;
      got[i] = without.at(name).data()[i] - original.data()[i];
    }
    EXPECT_LE(test::rel_l2(got.data(), expected.data(), expected.size()), 1e-5) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 277);
}

TEST(Lora, PeftKeyStyleMergesLikeKohya) {
  test::TempDir dir;
  std::map<std::string, std::string> module_of;  // kohya -> diffusers module
  const nlohmann::json manifest = read_json_file(lora_dir() / "manifest.json");
  for (const auto& m : manifest["lora"]["modules"])
    module_of[m["kohya"].get<std::string>()] = m["module"].get<std::string>();
  ASSERT_EQ(module_of.size(), 277u);
  const fs::path peft = rewrite_lora(dir.path(), "peft.safetensors", [&](std::string& name, Tensor&) {
    const size_t dot = name.find('.');
    const std::string kohya = name.substr(0, dot), suffix = name.substr(dot);
    const std::string renamed = suffix == ".lora_down.weight" ? ".lora_A.weight"
                                : suffix == ".lora_up.weight" ? ".lora_B.weight"
                                                              : suffix;
    name = "unet." + module_of.at(kohya) + renamed;
    return true;
  });
  const auto kohya = merge_all(lora_dir() / "lora.safetensors", 0.5);
  const auto diffusers = merge_all(peft, 0.5);
  for (const auto& [name, t] : kohya) EXPECT_TRUE(identical(t, diffusers.at(name))) << name;
}

TEST(Lora, KohyaNamesComeFromTheModuleNames) {
  EXPECT_EQ(kohya_name("lora_unet_", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0");
  EXPECT_EQ(kohya_name("lora_te_", "text_model.encoder.layers.3.mlp.fc1"), "lora_te_text_model_encoder_layers_3_mlp_fc1");
}

TEST(Lora, AppliesThroughTheLdmNamesOfASingleFile) {
  // tiny-lcm has tiny-sd's UNet topology (plus cond_proj), so the same LoRA fits both layouts.
  const auto loras = LoraSet::load({{lora_dir() / "lora.safetensors", 1.0}});
  const SafetensorsSource stored(test::golden_dir() / "tiny-lcm-ldm.safetensors");
  const SafetensorsSource folder(test::golden_dir() / "tiny-lcm/unet/diffusion_pytorch_model.safetensors");
  const UNetConfig config = config_of(test::golden_dir() / "tiny-lcm");
  const RenamingSource ldm = ldm_unet_source(stored, config);
  const LoraMergingSource from_ldm(ldm, loras, LoraMergingSource::Component::UNet);
  const LoraMergingSource from_folder(folder, loras, LoraMergingSource::Component::UNet);
  int changed = 0;
  for (const auto& [name, shape] : unet_parameters(test::golden_dir() / "tiny-lcm")) {
    const Tensor a = from_ldm.load(name, shape), b = from_folder.load(name, shape);
    EXPECT_TRUE(identical(a, b)) << name;
    changed += !identical(a, folder.load(name, shape));
  }
  EXPECT_EQ(changed, 277);
}

std::string model_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Lora, ModulesThatFitNoLayerAreReported) {
  test::TempDir dir;
  const fs::path extra = rewrite_lora(dir.path(), "extra.safetensors", [](std::string&, Tensor&) { return true; },
                                      {{"lora_unet_not_a_layer.lora_down.weight", Tensor::zeros({4, 32})},
                                       {"lora_unet_not_a_layer.lora_up.weight", Tensor::zeros({32, 4})}});
  const std::string e = model_error([&] { merge_all(extra, 1.0); });
  EXPECT_NE(e.find("lora_unet_not_a_layer"), std::string::npos) << e;
  EXPECT_NE(e.find("1 of 278"), std::string::npos) << e;
}

TEST(Lora, BadFilesNameTheModuleAndTheProblem) {
  test::TempDir dir;
  const std::string conv1 = "lora_unet_down_blocks_0_resnets_0_conv1";
  // A down factor with the wrong input width for down_blocks.0.resnets.0.conv1 (32 -> 33).
  const fs::path wrong = rewrite_lora(dir.path(), "wrong.safetensors", [&](std::string& name, Tensor& t) {
    if (name == conv1 + ".lora_down.weight") t = Tensor::zeros({4, 33, 3, 3});
    return true;
  });
  std::string e = model_error([&] { merge_all(wrong, 1.0); });
  EXPECT_NE(e.find(conv1), std::string::npos) << e;
  EXPECT_NE(e.find("do not fit"), std::string::npos) << e;

  const fs::path half = rewrite_lora(dir.path(), "half.safetensors",
                                     [&](std::string& name, Tensor&) { return name != conv1 + ".lora_up.weight"; });
  e = model_error([&] { LoraSet::load({{half, 1.0}}); });
  EXPECT_NE(e.find(conv1), std::string::npos) << e;
  EXPECT_NE(e.find("up factor"), std::string::npos) << e;

  const fs::path loha = rewrite_lora(dir.path(), "loha.safetensors", [](std::string&, Tensor&) { return true; },
                                     {{"lora_unet_conv_in.hada_w1_a", Tensor::zeros({4, 4})}});
  e = model_error([&] { LoraSet::load({{loha, 1.0}}); });
  EXPECT_NE(e.find("hada_w1_a"), std::string::npos) << e;

  e = model_error([&] { LoraSet::load({{dir.path() / "lcm-lora.ckpt", 1.0}}); });
  EXPECT_NE(e.find("safetensors"), std::string::npos) << e;
}

}  // namespace
}  // namespace lcmd
