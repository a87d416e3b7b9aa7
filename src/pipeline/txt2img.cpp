#include "pipeline/txt2img.h"

#include "pipeline/random_model.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "image/png.h"
#include "image/postprocess.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "models/ldm_names.h"
#include "models/lora.h"
#include "ops/work_counter.h"
#include "sched/embeddings.h"
#include "sched/torch_rng.h"

namespace lcmd {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double gmac_since(uint64_t macs0) { return static_cast<double>(ops::macs_done() - macs0) * 1e-9; }

// Builds the pipeline with the LoRAs merged into the UNet and text encoder weights as they load;
// every LoRA module must have found its layer.
std::unique_ptr<Txt2ImgPipeline> build_with_loras(ClipTokenizer tokenizer, const ClipTextConfig& text_config,
                                                  const WeightSource& text, const UNetConfig& unet_config,
                                                  const WeightSource& unet, const VaeConfig& vae_config,
                                                  const WeightSource& vae, const LcmSchedulerConfig& scheduler_config,
                                                  const PipelinePrecision& precision, const std::vector<LoraSpec>& specs) {
  const std::shared_ptr<const LoraSet> loras = LoraSet::load(specs);
  const LoraMergingSource merged_text(text, loras, LoraMergingSource::Component::TextEncoder);
  const LoraMergingSource merged_unet(unet, loras, LoraMergingSource::Component::UNet);
  auto pipeline = std::make_unique<Txt2ImgPipeline>(std::move(tokenizer), text_config, merged_text, unet_config,
                                                    merged_unet, vae_config, vae, scheduler_config, precision);
  loras->check_all_applied();
  return pipeline;
}

// Weights holding NaN or Inf give non-finite activations; instead of writing a black or noise
// image, the run stops at the first component whose output shows it ("reported at first use").
// One pass over a small tensor (text embedding, latents, image): nothing next to the model.
void check_finite(const Tensor& output, const std::string& component, const std::string& what) {
  const float* values = output.data();
  for (int64_t i = 0, n = output.numel(); i < n; ++i)
    if (!std::isfinite(values[i]))
      throw ModelError(component + ": " + what + " contains NaN or Inf; the " + component +
                       " weights may contain NaN/Inf values");
}

// [a; b] along the batch dimension.
Tensor concat_batch(const Tensor& a, const Tensor& b) {
  Shape shape = a.shape();
  shape[0] += b.dim(0);
  Tensor out(shape);
  std::copy(a.data(), a.data() + a.numel(), out.data());
  std::copy(b.data(), b.data() + b.numel(), out.data() + a.numel());
  return out;
}

// noise_pred = uncond + gs * (text - uncond), in float32 in this order, from the batch-2 UNet
// output [uncond; text] (diffusers' noise_pred.chunk(2) order).
Tensor apply_guidance(const Tensor& unet_output, float guidance_scale) {
  Shape shape = unet_output.shape();
  shape[0] = 1;
  Tensor out(shape);
  const int64_t n = out.numel();
  const float* uncond = unet_output.data();
  const float* text = unet_output.data() + n;
  for (int64_t i = 0; i < n; ++i) {
    const float difference = text[i] - uncond[i];
    const float scaled = guidance_scale * difference;
    out.data()[i] = uncond[i] + scaled;
  }
  return out;
}

}  // namespace

Txt2ImgPipeline::Txt2ImgPipeline(ClipTokenizer tokenizer, const ClipTextConfig& text_config,
                                 const WeightSource& text_weights, const UNetConfig& unet_config,
                                 const WeightSource& unet_weights, const VaeConfig& vae_config,
                                 const WeightSource& vae_weights, const LcmSchedulerConfig& scheduler_config,
                                 const PipelinePrecision& precision)
    : tokenizer_(std::move(tokenizer)),
      text_encoder_(text_config, Weights(text_weights, precision.text_encoder)),
      unet_(unet_config, Weights(unet_weights, precision.unet)),
      vae_(vae_config, Weights(vae_weights, precision.vae)),
      scheduler_(scheduler_config) {
  release_cached_memory();  // the float32 copies the weights were packed from
}

std::unique_ptr<Txt2ImgPipeline> Txt2ImgPipeline::from_parts(const ModelParts& p, const PipelinePrecision& precision,
                                                             const std::vector<LoraSpec>& loras) {
  return build_with_loras(p.tokenizer(), p.text, *p.text_weights, p.unet, *p.unet_weights, p.vae, *p.vae_weights,
                          p.scheduler, precision, loras);
}

std::unique_ptr<Txt2ImgPipeline> Txt2ImgPipeline::from_folder(const ModelFolder& f, const PipelinePrecision& precision,
                                                              const std::vector<LoraSpec>& loras) {
  return from_parts(ModelParts::from_folder(f), precision, loras);
}

std::unique_ptr<Txt2ImgPipeline> Txt2ImgPipeline::from_single_file(const std::filesystem::path& file,
                                                                   const std::filesystem::path& tokenizer_dir,
                                                                   const std::filesystem::path& config_dir,
                                                                   const PipelinePrecision& precision,
                                                                   const std::vector<LoraSpec>& loras) {
  return from_parts(ModelParts::from_single_file(file, tokenizer_dir, config_dir), precision, loras);
}

bool Txt2ImgPipeline::uses_classifier_free_guidance(double guidance_scale) const {
  return !unet_.config().time_cond_proj_dim && guidance_scale > 1;
}

Tensor Txt2ImgPipeline::encode_text(const std::vector<int32_t>& ids, bool* cached) const {
  std::optional<Tensor> hit = text_cache_ ? text_cache_->get(ids) : std::nullopt;
  *cached = hit.has_value();
  if (hit) return *hit;
  Tensor embeds = text_encoder_.forward({ids});
  check_finite(embeds, "text_encoder", "the prompt embedding");  // before it can be cached
  if (text_cache_) text_cache_->put(ids, embeds);
  return embeds;
}

GenerateResult Txt2ImgPipeline::run(const GenerateRequest& request, uint64_t seed, const ProgressCallback& progress,
                                    PipelineTrace* trace) const {
  const auto t_start = Clock::now();
  GenerateResult result;
  result.width = request.width;
  result.height = request.height;
  result.seed = seed;
  StageTimings& timings = result.timings;

  // 1-2. Prompt -> CLIP token ids -> text embedding (the UNet's cross-attention context). With
  // classifier-free guidance the negative prompt is encoded too and goes first in the batch.
  const bool guided = uses_classifier_free_guidance(request.guidance_scale);
  auto t0 = Clock::now();
  const std::vector<int32_t> ids = tokenizer_.encode(request.prompt);
  const std::vector<int32_t> negative_ids = guided ? tokenizer_.encode(request.negative_prompt) : std::vector<int32_t>();
  timings.tokenize_ms = ms_since(t0);
  t0 = Clock::now();
  uint64_t macs0 = ops::macs_done();
  bool cached = false, negative_cached = true;
  const Tensor prompt_embeds = encode_text(ids, &cached);
  const Tensor negative_embeds = guided ? encode_text(negative_ids, &negative_cached) : Tensor();
  result.text_embedding_cached = cached && negative_cached;
  timings.text_encoder_ms = ms_since(t0);

  // 3. Seeded initial latents: the numbers torch.randn gives for this seed, NCHW.
  const int latent_channels = unet_.config().in_channels;
  const int64_t lh = request.height / 8, lw = request.width / 8;
  TorchGenerator generator(seed);
  Tensor latents = generator.randn({1, latent_channels, lh, lw});  // init_noise_sigma is 1

  // 4. LCM denoising. An LCM-distilled UNet gets the guidance scale through the w-embedding;
  // a plain UNet gets it through classifier-free guidance (or not at all when gs <= 1).
  const std::vector<int> timesteps = scheduler_.timesteps(request.steps);
  Tensor w_embedding;
  std::vector<float> w;
  if (unet_.config().time_cond_proj_dim) {
    w = guidance_scale_embedding(request.guidance_scale, *unet_.config().time_cond_proj_dim);
    w_embedding = Tensor::from({1, static_cast<int64_t>(w.size())}, w.data());
  }
  if (trace) {
    trace->input_ids = ids;
    trace->prompt_embeds = prompt_embeds.clone();
    trace->negative_input_ids = negative_ids;
    trace->negative_prompt_embeds = guided ? negative_embeds.clone() : Tensor();
    trace->w_embedding = w;
    trace->latents_init = latents.clone();
    trace->timesteps = timesteps;
  }
  Tensor denoised(latents.shape());
  t0 = Clock::now();
  // Cross-attention K/V, once per image; batch [negative; prompt] with guidance.
  const UNetContext context = unet_.prepare_context(guided ? concat_batch(negative_embeds, prompt_embeds) : prompt_embeds);
  timings.text_encoder_ms += ms_since(t0);
  timings.text_encoder_gmac = gmac_since(macs0);
  macs0 = ops::macs_done();
  for (size_t i = 0; i < timesteps.size(); ++i) {
    t0 = Clock::now();
    const Tensor sample = guided ? concat_batch(latents, latents) : latents;  // the same t for both halves
    const Tensor unet_output =
        to_nchw(unet_.forward(to_nhwc(sample), timesteps[i], context, w_embedding.empty() ? nullptr : &w_embedding));
    check_finite(unet_output, "unet",
                 "the output of denoising step " + std::to_string(i + 1) + " of " + std::to_string(timesteps.size()));
    const Tensor model_pred = guided ? apply_guidance(unet_output, static_cast<float>(request.guidance_scale)) : unet_output;
    scheduler_.step(model_pred.data(), static_cast<int>(i), timesteps, latents.data(), denoised.data(),
                    static_cast<size_t>(latents.numel()), generator);
    timings.unet_step_ms.push_back(ms_since(t0));
    timings.unet_step_gmac = gmac_since(macs0) / static_cast<double>(i + 1);
    if (trace) {
      trace->unet_output.push_back(unet_output);  // a fresh tensor every step
      trace->model_pred.push_back(model_pred.clone());
      trace->denoised.push_back(denoised.clone());
      trace->latents.push_back(latents.clone());
    }
    if (progress && !progress(static_cast<int>(i) + 1, static_cast<int>(timesteps.size())))
      throw CancelledError("generation stopped after step " + std::to_string(i + 1) + " of " +
                           std::to_string(timesteps.size()));
  }

  // 5. VAE decode of the last denoised latent, then diffusers' postprocess to 8-bit RGB.
  t0 = Clock::now();
  macs0 = ops::macs_done();
  // Each decoder divides by its own scaling_factor: 0.18215 for the KL VAE, 1.0 for TAESD.
  const std::string& decoder = request.decoder.empty() ? default_decoder_ : request.decoder;
  if (decoder == "taesd" && !taesd_) throw InputError("decoder 'taesd' is not loaded (start with a TAESD folder)");
  if (decoder != "taesd" && decoder != "vae") throw InputError("decoder is '" + decoder + "'; allowed: vae, taesd");
  const bool tiny = decoder == "taesd";
  Tensor vae_input(denoised.shape());
  const float scaling = tiny ? taesd_->config().scaling_factor : vae_.config().scaling_factor;
  for (int64_t i = 0; i < denoised.numel(); ++i) vae_input.data()[i] = denoised.data()[i] / scaling;
  const Tensor decoded = tiny ? taesd_->forward(to_nhwc(vae_input)) : vae_.forward(to_nhwc(vae_input));
  check_finite(decoded, tiny ? "taesd" : "vae", "the decoded image");
  result.rgb = to_rgb8(decoded);
  timings.vae_decode_ms = ms_since(t0);
  timings.vae_decode_gmac = gmac_since(macs0);
  if (trace) {
    trace->vae_input = vae_input;
    trace->decoded = decoded;
  }

  // 6. PNG.
  t0 = Clock::now();
  result.png = encode_png(result.rgb.data(), request.width, request.height);
  timings.png_ms = ms_since(t0);
  timings.total_ms = ms_since(t_start);
  return result;
}

void Txt2ImgPipeline::load_taesd(const std::filesystem::path& dir, Precision precision) {
  const std::filesystem::path config_file = dir / "config.json";
  const TaesdConfig config = TaesdConfig::from_json(read_json_file(config_file), config_file.string());
  std::filesystem::path weights_file = dir / "diffusion_pytorch_model.safetensors";
  if (!std::filesystem::exists(weights_file) && std::filesystem::exists(dir / "diffusion_pytorch_model.fp16.safetensors"))
    weights_file = dir / "diffusion_pytorch_model.fp16.safetensors";
  auto source = std::make_unique<SafetensorsSource>(weights_file);
  if (has_original_taesd_decoder_names(*source)) {  // madebyollin's taesd_decoder.safetensors naming
    const OriginalTaesdDecoderSource original(std::move(source));
    taesd_ = std::make_unique<TaesdDecoder>(config, Weights(original, precision));
  } else {
    taesd_ = std::make_unique<TaesdDecoder>(config, Weights(*source, precision));
  }
  release_cached_memory();
}

void Txt2ImgPipeline::load_random_taesd(Precision precision) {
  const RandomSource source(kRandomTaesdSeed);
  taesd_ = std::make_unique<TaesdDecoder>(TaesdConfig{}, Weights(source, precision));
  release_cached_memory();
}

void Txt2ImgPipeline::set_default_decoder(const std::string& name) {
  if (name != "vae" && name != "taesd") throw InputError("decoder is '" + name + "'; allowed: vae, taesd");
  if (name == "taesd" && !taesd_) throw InputError("decoder 'taesd' needs a TAESD folder (--taesd DIR)");
  default_decoder_ = name;
}

}  // namespace lcmd
