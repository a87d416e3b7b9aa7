#include "pipeline/model_parts.h"

#include "models/ldm_names.h"

namespace lcmd {

namespace fs = std::filesystem;

ModelParts ModelParts::from_folder(const ModelFolder& f) {
  ModelParts p;
  p.description = "diffusers folder " + f.root.string();
  p.pipeline_class = f.pipeline_class;
  p.text_json = read_json_file(f.text_encoder_config);
  p.unet_json = read_json_file(f.unet_config);
  p.vae_json = read_json_file(f.vae_config);
  p.scheduler_json = read_json_file(f.scheduler_config);
  p.text = ClipTextConfig::from_json(p.text_json, f.text_encoder_config.string());
  p.unet = UNetConfig::from_json(p.unet_json, f.unet_config.string());
  p.vae = VaeConfig::from_json(p.vae_json, f.vae_config.string());
  p.scheduler = LcmSchedulerConfig::from_json(p.scheduler_json, f.scheduler_config.string());
  p.tokenizer_files = ClipTokenizer::read_files(f.tokenizer_dir);
  p.tokenizer_origin = f.tokenizer_dir;
  // The weight files stay mapped only while the models pack their parameters.
  p.text_weights = std::make_unique<SafetensorsSource>(f.text_encoder_weights);
  p.unet_weights = std::make_unique<SafetensorsSource>(f.unet_weights);
  p.vae_weights = std::make_unique<SafetensorsSource>(f.vae_weights);
  return p;
}

ModelParts ModelParts::from_single_file(const fs::path& file, const fs::path& tokenizer_dir, const fs::path& config_dir) {
  refuse_pickle_file(file);
  ModelParts p;
  p.description = "single-file checkpoint " + file.string();
  p.tokenizer_origin = locate_tokenizer(file, tokenizer_dir, config_dir);
  p.tokenizer_files = ClipTokenizer::read_files(p.tokenizer_origin);
  auto stored = std::make_unique<SafetensorsSource>(file);
  LdmConfigs c = infer_ldm_configs(stored->file(), config_dir);
  p.pipeline_class = c.unet.time_cond_proj_dim ? "LatentConsistencyModelPipeline" : "StableDiffusionPipeline";
  p.text_weights = std::make_unique<RenamingSource>(ldm_text_source(*stored));
  p.unet_weights = std::make_unique<RenamingSource>(ldm_unet_source(*stored, c.unet));
  p.vae_weights = std::make_unique<RenamingSource>(ldm_vae_source(*stored, c.vae));
  p.stored.push_back(std::move(stored));
  p.text = c.text, p.unet = c.unet, p.vae = c.vae, p.scheduler = c.scheduler;
  p.text_json = std::move(c.text_json), p.unet_json = std::move(c.unet_json);
  p.vae_json = std::move(c.vae_json), p.scheduler_json = std::move(c.scheduler_json);
  return p;
}

ModelParts ModelParts::from_packed(const PackedModelFile& file) {
  ModelParts p;
  p.description = "packed model " + file.path().string();
  p.pipeline_class = file.header().value("pipeline_class", "");
  const std::string where = file.path().string() + ": config of ";
  p.text_json = file.config("text_encoder");
  p.unet_json = file.config("unet");
  p.vae_json = file.config("vae");
  p.scheduler_json = file.config("scheduler");
  p.text = ClipTextConfig::from_json(p.text_json, where + "text_encoder");
  p.unet = UNetConfig::from_json(p.unet_json, where + "unet");
  p.vae = VaeConfig::from_json(p.vae_json, where + "vae");
  p.scheduler = LcmSchedulerConfig::from_json(p.scheduler_json, where + "scheduler");
  p.tokenizer_origin = file.path() / "tokenizer";
  p.tokenizer_files.vocab_json = std::string(file.embedded_file("tokenizer/vocab.json"));
  p.tokenizer_files.merges_txt = std::string(file.embedded_file("tokenizer/merges.txt"));
  if (file.has_embedded_file("tokenizer/tokenizer_config.json"))
    p.tokenizer_files.tokenizer_config_json = std::string(file.embedded_file("tokenizer/tokenizer_config.json"));
  if (file.has_embedded_file("tokenizer/special_tokens_map.json"))
    p.tokenizer_files.special_tokens_map_json = std::string(file.embedded_file("tokenizer/special_tokens_map.json"));
  p.text_weights = std::make_unique<PackedSource>(file, "text_encoder");
  p.unet_weights = std::make_unique<PackedSource>(file, "unet");
  p.vae_weights = std::make_unique<PackedSource>(file, "vae");
  return p;
}

}  // namespace lcmd
