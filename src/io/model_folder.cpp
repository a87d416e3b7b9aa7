#include "io/model_folder.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/packed_model.h"

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

// model_index.json's _class_name; the pipelines whose components this engine runs.
std::string read_pipeline_class(const fs::path& model_index) {
  std::ifstream in(model_index);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(model_index.string() + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("_class_name")) return "";
  if (!j["_class_name"].is_string()) throw ModelError(model_index.string() + ": '_class_name' must be a string");
  const std::string name = j["_class_name"];
  if (name != "LatentConsistencyModelPipeline" && name != "StableDiffusionPipeline")
    throw ModelError(model_index.string() + ": pipeline '" + name +
                     "' is not supported (supported: LatentConsistencyModelPipeline, StableDiffusionPipeline)");
  return name;
}

bool has_tokenizer(const fs::path& dir) {
  return fs::is_regular_file(dir / "vocab.json") && fs::is_regular_file(dir / "merges.txt");
}

std::string lowercase_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

}  // namespace

ModelFolder ModelFolder::locate(const fs::path& dir) {
  if (!fs::is_directory(dir))
    throw ModelError(dir.string() + ": not a model folder (no such directory; single-file checkpoints end in .safetensors)");
  ModelFolder m;
  m.root = dir;
  m.pipeline_class = read_pipeline_class(require_file(dir / "model_index.json"));
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

void refuse_pickle_file(const fs::path& path) {
  const std::string ext = lowercase_extension(path);
  if (ext != ".ckpt" && ext != ".pt" && ext != ".pth" && ext != ".bin") return;
  const std::string out = fs::path(path).replace_extension(".safetensors").string();
  throw ModelError(path.string() + ": a PyTorch pickle (" + ext +
                   "), which lcmd never reads: loading a pickle can run arbitrary code. Convert it once to safetensors, "
                   "e.g. python3 -c \"import torch, safetensors.torch as st; sd = torch.load('" + path.string() +
                   "', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); st.save_file({k: v.contiguous() "
                   "for k, v in sd.items() if isinstance(v, torch.Tensor)}, '" + out + "')\"");
}

ModelLayout detect_model_layout(const fs::path& path) {
  if (fs::is_directory(path)) return ModelLayout::DiffusersFolder;
  if (!fs::exists(path)) throw ModelError(path.string() + ": no such model folder or file");
  if (PackedModelFile::is_packed(path)) return ModelLayout::Packed;
  refuse_pickle_file(path);
  if (lowercase_extension(path) != ".safetensors")
    throw ModelError(path.string() +
                     ": not a model (expected a diffusers folder, a single-file .safetensors checkpoint or an lcmd "
                     "packed model)");
  return ModelLayout::SingleFile;
}

fs::path locate_tokenizer(const fs::path& model, const fs::path& explicit_dir, const fs::path& config_dir) {
  if (!explicit_dir.empty()) {
    if (!has_tokenizer(explicit_dir))
      throw ModelError(explicit_dir.string() + ": not a CLIP tokenizer folder (needs vocab.json and merges.txt)");
    return explicit_dir;
  }
  if (fs::is_directory(model)) return model / "tokenizer";
  if (!fs::exists(model)) throw ModelError(model.string() + ": no such model folder or file");
  for (const fs::path& candidate : {config_dir.empty() ? fs::path() : config_dir / "tokenizer", model.parent_path() / "tokenizer"})
    if (!candidate.empty() && has_tokenizer(candidate)) return candidate;
  throw ModelError(model.string() + ": a single-file checkpoint carries no tokenizer, and none was found next to it (" +
                   (model.parent_path() / "tokenizer").string() +
                   "); pass --tokenizer DIR with the CLIP vocab.json and merges.txt, e.g. the tokenizer/ folder of any SD1.5 "
                   "diffusers model");
}

}  // namespace lcmd
