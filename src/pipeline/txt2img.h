// LatentConsistencyModelPipeline (diffusers/pipelines/latent_consistency_models), the six steps:
// request -> tokens -> text embedding -> seeded latents -> LCM denoising -> VAE decode -> PNG.
// A UNet without time_cond_proj (plain SD1.5, e.g. with an LCM-LoRA merged in) runs as
// diffusers' StableDiffusionPipeline + LCMScheduler instead: classifier-free guidance with the
// negative prompt when guidance_scale > 1, one pass otherwise, and no guidance embedding.
#pragma once
#include <filesystem>
#include <memory>
#include <vector>

#include "io/model_folder.h"
#include "lcmd/engine.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/taesd.h"
#include "models/vae.h"
#include "pipeline/embedding_cache.h"
#include "pipeline/model_parts.h"
#include "sched/lcm_scheduler.h"
#include "text/tokenizer.h"

namespace lcmd {

// What a run produced along the way, for parity tests against diffusers (latents NCHW, as
// torch lays them out; decoded NHWC).
struct PipelineTrace {
  std::vector<int32_t> input_ids;
  Tensor prompt_embeds;
  std::vector<int32_t> negative_input_ids;  // with classifier-free guidance only
  Tensor negative_prompt_embeds;
  std::vector<float> w_embedding;
  Tensor latents_init;
  std::vector<int> timesteps;
  // Per step: the raw UNet output (batch 2 with guidance: [0] unconditional, [1] conditional),
  // the model output the scheduler gets (after guidance), and the scheduler's outputs.
  std::vector<Tensor> unet_output, model_pred, denoised, latents;
  Tensor vae_input;
  Tensor decoded;
};

// The precision each model computes in.
struct PipelinePrecision {
  Precision text_encoder = Precision::FP32;
  Precision unet = Precision::FP32;
  Precision vae = Precision::FP32;
};

class Txt2ImgPipeline {
 public:
  // The components, each from its config and a weight source (a model folder's files, or random).
  Txt2ImgPipeline(ClipTokenizer tokenizer, const ClipTextConfig& text_config, const WeightSource& text_weights,
                  const UNetConfig& unet_config, const WeightSource& unet_weights, const VaeConfig& vae_config,
                  const WeightSource& vae_weights, const LcmSchedulerConfig& scheduler_config,
                  const PipelinePrecision& precision = {});

  // Builds the models from a model's parts (see model_parts.h), merging the LoRAs.
  static std::unique_ptr<Txt2ImgPipeline> from_parts(const ModelParts& parts, const PipelinePrecision& precision = {},
                                                     const std::vector<LoraSpec>& loras = {});
  // Reads a diffusers folder (ModelError names what is missing or wrong), merging the LoRAs.
  static std::unique_ptr<Txt2ImgPipeline> from_folder(const ModelFolder& folder, const PipelinePrecision& precision = {},
                                                      const std::vector<LoraSpec>& loras = {});
  // Reads a single-file LDM checkpoint (see models/ldm_names.h): configs from its shapes over the
  // SD1.5 defaults or config_dir's configs, the tokenizer from locate_tokenizer.
  static std::unique_ptr<Txt2ImgPipeline> from_single_file(const std::filesystem::path& file,
                                                           const std::filesystem::path& tokenizer_dir,
                                                           const std::filesystem::path& config_dir,
                                                           const PipelinePrecision& precision = {},
                                                           const std::vector<LoraSpec>& loras = {});

  // Runs one request with the given seed. The request must be valid (see validate()).
  GenerateResult run(const GenerateRequest& request, uint64_t seed, const ProgressCallback& progress = {},
                     PipelineTrace* trace = nullptr) const;

  const ClipTokenizer& tokenizer() const { return tokenizer_; }
  const ClipTextModel& text_encoder() const { return text_encoder_; }
  const UNet2DConditionModel& unet() const { return unet_; }
  const VaeDecoder& vae() const { return vae_; }

  // Adds TAESD (a diffusers AutoencoderTiny folder) as a second decoder, requested by name.
  void load_taesd(const std::filesystem::path& dir, Precision precision);
  // The full-size TAESD (madebyollin/taesd's config) with random weights, for benchmarks.
  void load_random_taesd(Precision precision);
  bool has_taesd() const { return taesd_ != nullptr; }
  void set_default_decoder(const std::string& name);
  const LcmScheduler& scheduler() const { return scheduler_; }

  // Keeps up to `entries` text embeddings (and `bytes`) for prompts seen before; 0 disables.
  void set_text_cache(size_t entries, size_t bytes) { text_cache_ = std::make_unique<EmbeddingCache>(entries, bytes); }
  const EmbeddingCache* text_cache() const { return text_cache_.get(); }

  // StableDiffusionPipeline's do_classifier_free_guidance: a UNet without a guidance embedding
  // and guidance_scale > 1.
  bool uses_classifier_free_guidance(double guidance_scale) const;

 private:
  // The text encoder's output for these ids, from the cache when there; *cached says which.
  Tensor encode_text(const std::vector<int32_t>& ids, bool* cached) const;

  ClipTokenizer tokenizer_;
  ClipTextModel text_encoder_;
  UNet2DConditionModel unet_;
  VaeDecoder vae_;
  std::unique_ptr<TaesdDecoder> taesd_;
  std::string default_decoder_ = "vae";
  LcmScheduler scheduler_;
  std::unique_ptr<EmbeddingCache> text_cache_;
};

}  // namespace lcmd
