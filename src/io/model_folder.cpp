#include "io/model_folder.h"

#include "core/error.h"

namespace lcmd {

namespace fs = std::filesystem;

namespace {

fs::path require_file(const fs::path& p) {
  if (!fs::is_regular_file(p)) throw ModelError(p.string() + ": missing (expected in a diffusers model folder)");
  return p;
}

// "<stem>.safetensors", else the "<stem>.fp16.safetensors" variant.
fs::path weights_file(const fs::path& dir, const std::string& stem) {
  const fs::path plain = dir / (stem + ".safetensors"), fp16 = dir / (stem + ".fp16.safetensors");
  if (fs::is_regular_file(plain)) return plain;
  if (fs::is_regular_file(fp16)) return fp16;
  throw ModelError(plain.string() + ": missing (nor " + fp16.filename().string() +
                   "; only .safetensors weights are read, convert .bin/.ckpt files first)");
}

}  // namespace

ModelFolder ModelFolder::locate(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw ModelError(dir.string() + ": not a model folder (no such directory)");
  ModelFolder m;
  m.root = dir;
  require_file(dir / "model_index.json");
  m.tokenizer_dir = dir / "tokenizer";
  require_file(m.tokenizer_dir / "vocab.json");
  require_file(m.tokenizer_dir / "merges.txt");
  m.scheduler_config = require_file(dir / "scheduler" / "scheduler_config.json");
  m.text_encoder_config = require_file(dir / "text_encoder" / "config.json");
  m.text_encoder_weights = weights_file(dir / "text_encoder", "model");
  m.unet_config = require_file(dir / "unet" / "config.json");
  m.unet_weights = weights_file(dir / "unet", "diffusion_pytorch_model");
  m.vae_config = require_file(dir / "vae" / "config.json");
  m.vae_weights = weights_file(dir / "vae", "diffusion_pytorch_model");
  return m;
}

}  // namespace lcmd
