// The HuggingFace diffusers folder layout users download (e.g. SimianLuo/LCM_Dreamshaper_v7):
// which file holds which component. Both the plain and the ".fp16" weight variants are accepted.
#pragma once
#include <filesystem>

namespace lcmd {

struct ModelFolder {
  std::filesystem::path root;
  std::filesystem::path tokenizer_dir;
  std::filesystem::path scheduler_config;
  std::filesystem::path text_encoder_config, text_encoder_weights;
  std::filesystem::path unet_config, unet_weights;
  std::filesystem::path vae_config, vae_weights;

  // Finds every file the engine needs; ModelError names the first one missing.
  static ModelFolder locate(const std::filesystem::path& dir);
};

}  // namespace lcmd
