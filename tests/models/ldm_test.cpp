// Single-file LDM checkpoints: the name table covers exactly the tensors of a real SD1.5 LDM
// file (../shared/sd15/manifest_ldm.json), the tiny golden file gives bit-identical weights to
// the diffusers folder it was converted from, its fp16 twin is that file rounded to fp16, the
// architecture is read from shapes, and broken files give errors that name the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/ldm_names.h"
#include "models/unet.h"
#include "models/vae.h"
#include "recording_source.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

using test::RecordingSource;

fs::path ldm_file() { return test::golden_dir() / "tiny-lcm-ldm.safetensors"; }
fs::path ldm_fp16_file() { return test::golden_dir() / "tiny-lcm-ldm.fp16.safetensors"; }
fs::path tiny_folder() { return test::golden_dir() / "tiny-lcm"; }

struct Walks {
  std::map<std::string, Shape> text, unet, vae;
};

// Every parameter name and shape the model walk asks for with these configs (VAE: encoder too).
Walks walk(const ClipTextConfig& text, const UNetConfig& unet, const VaeConfig& vae) {
  Walks w;
  RecordingSource t, u, v;
  ClipTextModel(text, Weights(t));
  UNet2DConditionModel(unet, Weights(u));
  declare_vae_encoder_parameters(vae, Weights(v));
  VaeDecoder(vae, Weights(v));
  w.text = t.requested, w.unet = u.requested, w.vae = v.requested;
  return w;
}

template <typename Config>
Config folder_config(const fs::path& folder, const std::string& rel) {
  return Config::from_json(read_json_file(folder / rel), (folder / rel).string());
}

Walks tiny_walks() {
  return walk(folder_config<ClipTextConfig>(tiny_folder(), "text_encoder/config.json"),
              folder_config<UNetConfig>(tiny_folder(), "unet/config.json"),
              folder_config<VaeConfig>(tiny_folder(), "vae/config.json"));
}

TEST(LdmNames, Sd15WalkMapsOntoEveryTensorOfTheRealLdmFile) {
  const fs::path sd15 = test::shared_dir() / "sd15";
  const auto unet = folder_config<UNetConfig>(sd15, "unet/config.json");
  const auto vae = folder_config<VaeConfig>(sd15, "vae/config.json");
  const Walks w = walk(folder_config<ClipTextConfig>(sd15, "text_encoder/config.json"), unet, vae);
  std::map<std::string, Shape> manifest;
  const nlohmann::json ldm_manifest = read_json_file(sd15 / "manifest_ldm.json");
  for (const auto& [name, t] : ldm_manifest["tensors"].items())
    manifest[name] = t["shape"].get<Shape>();
  ASSERT_EQ(manifest.size(), 1131u);

  std::set<std::string> mapped;
  auto check = [&](const std::map<std::string, Shape>& walked, const LdmNameMap& map) {
    for (const auto& [name, shape] : walked) {
      const RenamedTensor ldm = map.to_ldm(name);
      EXPECT_TRUE(mapped.insert(ldm.name).second) << ldm.name << " is the target of two names";
      auto it = manifest.find(ldm.name);
      if (it == manifest.end()) {
        ADD_FAILURE() << name << " -> " << ldm.name << ": not in the LDM file";
        continue;
      }
      Shape expected = shape;
      if (ldm.stored_as_conv1x1) expected.insert(expected.end(), {1, 1});
      EXPECT_EQ(it->second, expected) << name << " -> " << ldm.name;
    }
  };
  check(w.text, LdmNameMap::text_encoder());
  check(w.unet, LdmNameMap::unet(unet));
  check(w.vae, LdmNameMap::vae(vae));
  for (const auto& [name, shape] : manifest) EXPECT_TRUE(mapped.count(name)) << name << " is never loaded";
}

TEST(LdmNames, BlockNumberingFollowsTheCompVisLayout) {
  const auto unet = folder_config<UNetConfig>(test::shared_dir() / "sd15", "unet/config.json");
  const LdmNameMap u = LdmNameMap::unet(unet);
  const std::string p = kLdmUNetPrefix;
  EXPECT_EQ(u.to_ldm("up_blocks.0.upsamplers.0.conv.weight").name, p + "output_blocks.2.1.conv.weight");
  EXPECT_EQ(u.to_ldm("up_blocks.2.upsamplers.0.conv.bias").name, p + "output_blocks.8.2.conv.bias");
  EXPECT_EQ(u.to_ldm("down_blocks.2.downsamplers.0.conv.weight").name, p + "input_blocks.9.0.op.weight");
  EXPECT_EQ(u.to_ldm("down_blocks.1.resnets.1.time_emb_proj.weight").name, p + "input_blocks.5.0.emb_layers.1.weight");
  EXPECT_EQ(u.to_ldm("up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0.weight").name,
            p + "output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.weight");
  EXPECT_EQ(u.to_ldm("time_embedding.cond_proj.weight").name, p + "time_embedding.cond_proj.weight");
  const LdmNameMap v = LdmNameMap::vae(folder_config<VaeConfig>(test::shared_dir() / "sd15", "vae/config.json"));
  EXPECT_EQ(v.to_ldm("decoder.up_blocks.0.resnets.2.conv2.weight").name, "first_stage_model.decoder.up.3.block.2.conv2.weight");
  EXPECT_EQ(v.to_ldm("decoder.up_blocks.3.resnets.0.conv_shortcut.weight").name,
            "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight");
  const RenamedTensor q = v.to_ldm("decoder.mid_block.attentions.0.to_q.weight");
  EXPECT_EQ(q.name, "first_stage_model.decoder.mid.attn_1.q.weight");
  EXPECT_TRUE(q.stored_as_conv1x1);
  EXPECT_FALSE(v.to_ldm("decoder.mid_block.attentions.0.to_q.bias").stored_as_conv1x1);
  EXPECT_FALSE(v.to_ldm("decoder.mid_block.attentions.0.group_norm.weight").stored_as_conv1x1);
}

TEST(LdmCheckpoint, ArchitectureComesFromShapesAndHeadsFromTheConfigs) {
  const SafetensorsFile file = SafetensorsFile::open(ldm_file());
  const LdmConfigs c = infer_ldm_configs(file, tiny_folder());
  const auto unet = folder_config<UNetConfig>(tiny_folder(), "unet/config.json");
  EXPECT_EQ(c.unet.block_out_channels, unet.block_out_channels);
  EXPECT_EQ(c.unet.down_block_types, unet.down_block_types);
  EXPECT_EQ(c.unet.up_block_types, unet.up_block_types);
  EXPECT_EQ(c.unet.cross_attention_dim, 16);
  EXPECT_EQ(c.unet.time_cond_proj_dim, std::optional<int>(32));  // LCM-distilled: has cond_proj
  EXPECT_EQ(c.unet.num_attention_heads, unet.num_attention_heads);
  EXPECT_EQ(c.unet.time_embedding_dim, 128);
  EXPECT_EQ(c.text.hidden_size, 16);
  EXPECT_EQ(c.text.num_hidden_layers, 2);
  EXPECT_EQ(c.text.vocab_size, 49408);
  EXPECT_EQ(c.text.num_attention_heads, 2);
  EXPECT_EQ(c.vae.block_out_channels, folder_config<VaeConfig>(tiny_folder(), "vae/config.json").block_out_channels);
  EXPECT_TRUE(c.vae.mid_block_add_attention);
  EXPECT_FLOAT_EQ(c.vae.scaling_factor, 0.18215f);

  // Without configs the SD1.5 head counts apply: 12 text heads cannot split a width of 16.
  try {
    infer_ldm_configs(file);
    FAIL() << "the SD1.5 text head count was accepted for a 16-wide encoder";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads"), std::string::npos) << e.what();
  }
}

using Compare = std::function<void(const std::string& name, const Tensor& ldm, const Tensor& diffusers)>;

// Loads every walked tensor through the LDM names of `file` and from the diffusers folder.
void for_each_tensor_pair(const fs::path& file, const Compare& compare) {
  const SafetensorsSource stored(file);
  const LdmConfigs c = infer_ldm_configs(stored.file(), tiny_folder());
  const Walks w = tiny_walks();
  const SafetensorsSource text(tiny_folder() / "text_encoder/model.safetensors");
  const SafetensorsSource unet(tiny_folder() / "unet/diffusion_pytorch_model.safetensors");
  const SafetensorsSource vae(tiny_folder() / "vae/diffusion_pytorch_model.safetensors");
  const RenamingSource ldm_text = ldm_text_source(stored), ldm_unet = ldm_unet_source(stored, c.unet),
                       ldm_vae = ldm_vae_source(stored, c.vae);
  size_t n = 0;
  for (const auto& [walked, ldm, folder] :
       {std::tuple{&w.text, &ldm_text, &text}, std::tuple{&w.unet, &ldm_unet, &unet}, std::tuple{&w.vae, &ldm_vae, &vae}})
    for (const auto& [name, shape] : *walked) {
      compare(name, ldm->load(name, shape), folder->load(name, shape));
      ++n;
    }
  EXPECT_EQ(n, 36u + 685u + 244u);  // every tensor but position_ids
}

TEST(LdmCheckpoint, EveryTensorIsBitIdenticalToTheDiffusersFolder) {
  for_each_tensor_pair(ldm_file(), [](const std::string& name, const Tensor& ldm, const Tensor& ref) {
    ASSERT_EQ(ldm.shape(), ref.shape()) << name;
    EXPECT_EQ(std::memcmp(ldm.data(), ref.data(), sizeof(float) * ref.numel()), 0) << name;
  });
}

TEST(LdmCheckpoint, Fp16TwinIsTheFp32FileRoundedToHalf) {
  for_each_tensor_pair(ldm_fp16_file(), [](const std::string& name, const Tensor& ldm, const Tensor& ref) {
    ASSERT_EQ(ldm.shape(), ref.shape()) << name;
    size_t mismatches = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) mismatches += ldm.data()[i] != f16_to_f32(f32_to_f16(ref.data()[i]));
    EXPECT_EQ(mismatches, 0u) << name;
  });
}

// A copy of the tiny LDM file (float tensors only) without the tensors `drop` selects, plus `extra`.
fs::path write_variant(const fs::path& dir, const std::string& name, const std::function<bool(const std::string&)>& drop,
                       const std::vector<std::pair<std::string, Tensor>>& extra = {}) {
  const SafetensorsFile src = SafetensorsFile::open(ldm_file());
  std::vector<Tensor> keep;
  std::vector<TensorToWrite> out;
  for (const TensorInfo& t : src.tensors()) {
    if (t.dtype != DType::F32 || drop(t.name)) continue;
    keep.push_back(src.load_f32_as_stored(t.name));
    out.push_back({t.name, t.shape, keep.back().data()});
  }
  for (const auto& [n, t] : extra) out.push_back({n, t.shape(), t.data()});
  const fs::path path = dir / name;
  write_safetensors(path, out);
  return path;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "(no error)";
}

void build_unet(const fs::path& file) {
  const SafetensorsSource stored(file);
  const LdmConfigs c = infer_ldm_configs(stored.file(), tiny_folder());
  UNet2DConditionModel(c.unet, Weights(ldm_unet_source(stored, c.unet)));
}

TEST(LdmCheckpoint, ExtraKeysAreToleratedAndMissingOnesNamed) {
  test::TempDir dir;
  // EMA copies and bookkeeping scalars, as real checkpoints carry them.
  const fs::path with_ema = write_variant(dir.path(), "ema.safetensors", [](const std::string&) { return false; },
                                          {{"model_ema.decay", Tensor::zeros({})},
                                           {"model_ema.diffusion_modelinput_blocks00weight", Tensor::zeros({32, 4, 3, 3})}});
  EXPECT_EQ(error_of([&] { build_unet(with_ema); }), "(no error)");

  const std::string gone = "model.diffusion_model.input_blocks.1.0.in_layers.0.weight";
  const fs::path missing = write_variant(dir.path(), "missing.safetensors", [&](const std::string& n) { return n == gone; });
  const std::string e = error_of([&] { build_unet(missing); });
  EXPECT_NE(e.find(gone), std::string::npos) << e;
  EXPECT_NE(e.find("down_blocks.0.resnets.0.norm1.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("missing.safetensors"), std::string::npos) << e;
}

TEST(LdmCheckpoint, FilesThatAreNotSd1LdmCheckpointsAreNamed) {
  test::TempDir dir;
  auto infer = [](const fs::path& p) { return error_of([&] { infer_ldm_configs(SafetensorsFile::open(p)); }); };
  const std::string no_vae = infer(write_variant(dir.path(), "novae.safetensors", [](const std::string& n) {
    return n.starts_with("first_stage_model.");
  }));
  EXPECT_NE(no_vae.find("no VAE"), std::string::npos) << no_vae;
  const std::string no_text = infer(write_variant(dir.path(), "notext.safetensors", [](const std::string& n) {
    return n.starts_with("cond_stage_model.");
  }));
  EXPECT_NE(no_text.find("cond_stage_model.transformer"), std::string::npos) << no_text;
  const std::string diffusers = infer(tiny_folder() / "unet/diffusion_pytorch_model.safetensors");
  EXPECT_NE(diffusers.find("not an LDM single-file checkpoint"), std::string::npos) << diffusers;
  EXPECT_NE(diffusers.find("diffusers"), std::string::npos) << diffusers;
  const std::string sdxl = infer(write_variant(dir.path(), "sdxl.safetensors", [](const std::string&) { return false; },
                                              {{"conditioner.embedders.0.transformer.x", Tensor::zeros({1})}}));
  EXPECT_NE(sdxl.find("SDXL"), std::string::npos) << sdxl;
}

}  // namespace
}  // namespace lcmd
