// Where a model comes from: the HuggingFace diffusers folder layout users download (e.g.
// SimianLuo/LCM_Dreamshaper_v7, or any StableDiffusionPipeline folder), or one single-file
// .safetensors checkpoint (civitai / A1111 style). For folders: which file holds which component;
// both the plain and the ".fp16" weight variants are accepted. Pickles are never read.
#pragma once
#include <filesystem>
#include <string>

namespace lcmd {

struct ModelFolder {
  std::filesystem::path root;
  std::string pipeline_class;  // model_index.json's _class_name (empty when it has none)
  std::filesystem::path tokenizer_dir;
  std::filesystem::path scheduler_config;
  std::filesystem::path text_encoder_config, text_encoder_weights;
  std::filesystem::path unet_config, unet_weights;
  std::filesystem::path vae_config, vae_weights;

  // Finds every file the engine needs; ModelError names the first one missing, or a pipeline
  // class other than LatentConsistencyModelPipeline / StableDiffusionPipeline.
  static ModelFolder locate(const std::filesystem::path& dir);
};

enum class ModelLayout { DiffusersFolder, SingleFile, Packed };

// A directory is a diffusers folder, a file starting with the LCMDPACK signature a packed model
// (`lcmd pack`), a .safetensors file a single-file checkpoint. ModelError for a missing path, a
// pickle (see refuse_pickle_file) or any other file.
ModelLayout detect_model_layout(const std::filesystem::path& path);

// ModelError for .ckpt/.pt/.pth/.bin files, saying how to convert them to safetensors: unpickling
// an untrusted file can run arbitrary code, so this engine never reads pickles.
void refuse_pickle_file(const std::filesystem::path& path);

// The CLIP tokenizer folder (vocab.json, merges.txt) for a model: `explicit_dir` when given; for
// a folder its tokenizer/; for a single file <config_dir>/tokenizer, then tokenizer/ next to
// the file. ModelError saying how to provide one when none is found.
std::filesystem::path locate_tokenizer(const std::filesystem::path& model, const std::filesystem::path& explicit_dir,
                                       const std::filesystem::path& config_dir = {});

}  // namespace lcmd
