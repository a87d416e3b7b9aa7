// What a model is made of before it is built, whatever file layout it came in: the configs
// (parsed, and as JSON for `lcmd pack`), the tokenizer's files, and one weight source per
// component. A diffusers folder, a single-file LDM checkpoint and a packed model each fill it;
// everything after (LoRA merging, building the models, packing) is shared.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/model_folder.h"
#include "io/packed_model.h"
#include "models/config.h"
#include "models/weights.h"
#include "sched/lcm_scheduler.h"
#include "text/tokenizer.h"

namespace lcmd {

struct ModelParts {
  std::string description;  // e.g. "diffusers folder DIR", for messages and pack headers
  std::string pipeline_class;
  nlohmann::json text_json, unet_json, vae_json, scheduler_json;
  ClipTextConfig text;
  UNetConfig unet;
  VaeConfig vae;
  LcmSchedulerConfig scheduler;
  ClipTokenizer::Files tokenizer_files;
  std::filesystem::path tokenizer_origin;  // names the tokenizer's files in messages
  // The stored files the component sources below read from (declared first: they outlive them).
  std::vector<std::unique_ptr<WeightSource>> stored;
  // The weights of each component, named as diffusers names them.
  std::unique_ptr<WeightSource> text_weights, unet_weights, vae_weights;

  ClipTokenizer tokenizer() const { return ClipTokenizer::from_files(tokenizer_files, tokenizer_origin); }

  static ModelParts from_folder(const ModelFolder& folder);
  // See Txt2ImgPipeline::from_single_file.
  static ModelParts from_single_file(const std::filesystem::path& file, const std::filesystem::path& tokenizer_dir,
                                     const std::filesystem::path& config_dir);
  // The packed file must outlive the parts (its sources read from the mapping).
  static ModelParts from_packed(const PackedModelFile& file);
};

}  // namespace lcmd
