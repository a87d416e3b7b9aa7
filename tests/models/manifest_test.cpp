// The module tree asks for exactly the tensors of the real LCM_Dreamshaper_v7 files: every
// name and shape of ../shared/sd15/manifest.json, built from ../shared/sd15's configs alone.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "models/clip_text.h"
#include "models/config.h"
#include "models/unet.h"
#include "models/vae.h"
#include "recording_source.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

using test::RecordingSource;

std::map<std::string, Shape> manifest_tensors(const std::string& component) {
  const auto m = read_json_file(test::shared_dir() / "sd15/manifest.json");
  std::map<std::string, Shape> out;
  const auto& tensors = m["components"][component]["tensors"];
  if (tensors.is_object()) {
    for (const auto& [name, t] : tensors.items()) out[name] = t["shape"].get<Shape>();
  } else {
    for (const auto& t : tensors) out[t["name"].get<std::string>()] = t["shape"].get<Shape>();
  }
  return out;
}

void expect_same(const std::map<std::string, Shape>& ours, const std::map<std::string, Shape>& manifest,
                 const std::string& component) {
  ASSERT_FALSE(manifest.empty()) << component << ": manifest lists no tensors";
  for (const auto& [name, shape] : manifest) {
    auto it = ours.find(name);
    if (it == ours.end()) {
      ADD_FAILURE() << component << ": engine never asks for " << name;
      continue;
    }
    EXPECT_EQ(it->second, shape) << component << ": " << name;
  }
  for (const auto& [name, shape] : ours)
    EXPECT_TRUE(manifest.count(name)) << component << ": engine asks for " << name << ", not in the real file";
}

nlohmann::json sd15_config(const std::string& rel) { return read_json_file(test::shared_dir() / "sd15" / rel); }

TEST(Sd15Manifest, TextEncoderAsksForEveryTensor) {
  RecordingSource rec;
  ClipTextModel(ClipTextConfig::from_json(sd15_config("text_encoder/config.json"), "sd15 text"), Weights(rec));
  expect_same(rec.requested, manifest_tensors("text_encoder"), "text_encoder");
}

TEST(Sd15Manifest, VaeAsksForEveryTensor) {
  RecordingSource rec;
  const auto cfg = VaeConfig::from_json(sd15_config("vae/config.json"), "sd15 vae");
  declare_vae_encoder_parameters(cfg, Weights(rec));
  VaeDecoder(cfg, Weights(rec));
  expect_same(rec.requested, manifest_tensors("vae"), "vae");
}

TEST(Sd15Manifest, UNetAsksForEveryTensor) {
  RecordingSource rec;
  UNet2DConditionModel(UNetConfig::from_json(sd15_config("unet/config.json"), "sd15 unet"), Weights(rec));
  expect_same(rec.requested, manifest_tensors("unet"), "unet");
}

}  // namespace
}  // namespace lcmd
