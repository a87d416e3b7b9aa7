#include "pipeline/random_model.h"

#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/config.h"
#include "models/unet.h"
#include "models/vae.h"

namespace lcmd {

namespace fs = std::filesystem;

namespace {

// Walks a component's module tree to learn its parameters, then writes them to `file`.
template <typename Build>
void write_component(const fs::path& file, DType dtype, uint64_t seed, Build build) {
  RandomSource source(seed);
  build(source);  // the models ask for every tensor they need, with its shape
  std::vector<Tensor> values;
  std::vector<TensorToWrite> tensors;
  values.reserve(source.requested().size());
  for (const auto& r : source.requested()) {
    values.push_back(source.generate(r.name, r.shape));
    tensors.push_back({r.name, r.shape, values.back().data(), dtype});
  }
  write_safetensors(file, tensors, {{"format", "pt"}});
}

void copy_required(const fs::path& from, const fs::path& to) {
  if (!fs::is_regular_file(from)) throw ModelError(from.string() + ": missing");
  fs::create_directories(to.parent_path());
  fs::copy_file(from, to);
}

}  // namespace

void write_random_model(const fs::path& like, const fs::path& tokenizer_dir, const fs::path& out, DType dtype,
                        uint64_t seed) {
  if (dtype != DType::F32 && dtype != DType::F16) throw InputError("dtype must be fp32 or fp16");
  if (fs::exists(out) && !(fs::is_directory(out) && fs::is_empty(out)))
    throw InputError(out.string() + ": already exists and is not an empty directory");
  const fs::path tok = tokenizer_dir.empty() ? like / "tokenizer" : tokenizer_dir;
  for (const char* f : {"vocab.json", "merges.txt"})
    if (!fs::is_regular_file(tok / f))
      throw ModelError((tok / f).string() + ": missing; pass --tokenizer DIR with the CLIP vocab.json and merges.txt");

  const auto text_config = ClipTextConfig::from_json(read_json_file(like / "text_encoder/config.json"),
                                                     (like / "text_encoder/config.json").string());
  const auto unet_config =
      UNetConfig::from_json(read_json_file(like / "unet/config.json"), (like / "unet/config.json").string());
  const auto vae_config = VaeConfig::from_json(read_json_file(like / "vae/config.json"), (like / "vae/config.json").string());

  // Build next to the target, then rename: the folder appears only when complete.
  fs::create_directories(out.parent_path().empty() ? fs::path(".") : out.parent_path());
  const fs::path tmp = out.string() + ".partial-" + std::to_string(std::random_device{}());
  try {
    fs::create_directories(tmp);
    copy_required(like / "model_index.json", tmp / "model_index.json");
    copy_required(like / "scheduler/scheduler_config.json", tmp / "scheduler/scheduler_config.json");
    for (const char* c : {"text_encoder", "unet", "vae"}) copy_required(like / c / "config.json", tmp / c / "config.json");
    for (const char* f : {"vocab.json", "merges.txt"}) copy_required(tok / f, tmp / "tokenizer" / f);
    for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"}) {
      const fs::path src = fs::is_regular_file(like / "tokenizer" / f) ? like / "tokenizer" / f : tok / f;
      if (fs::is_regular_file(src)) copy_required(src, tmp / "tokenizer" / f);
    }
    const std::string suffix = dtype == DType::F16 ? ".fp16.safetensors" : ".safetensors";
    write_component(tmp / "text_encoder" / ("model" + suffix), dtype, seed + kRandomTextEncoderSeed,
                    [&](const WeightSource& s) { ClipTextModel(text_config, Weights(s)); });
    write_component(tmp / "unet" / ("diffusion_pytorch_model" + suffix), dtype, seed + kRandomUNetSeed,
                    [&](const WeightSource& s) { UNet2DConditionModel(unet_config, Weights(s)); });
    write_component(tmp / "vae" / ("diffusion_pytorch_model" + suffix), dtype, seed + kRandomVaeSeed, [&](const WeightSource& s) {
      declare_vae_encoder_parameters(vae_config, Weights(s));
      VaeDecoder(vae_config, Weights(s));
    });
    if (fs::exists(out)) fs::remove(out);  // an empty directory
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace lcmd
