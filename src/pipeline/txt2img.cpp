#include "pipeline/txt2img.h"

#include <chrono>

#include "image/png.h"
#include "image/postprocess.h"
#include "models/config.h"
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
      scheduler_(scheduler_config) {}

std::unique_ptr<Txt2ImgPipeline> Txt2ImgPipeline::from_folder(const ModelFolder& f, const PipelinePrecision& precision) {
  const auto text_config = ClipTextConfig::from_json(read_json_file(f.text_encoder_config), f.text_encoder_config.string());
  const auto unet_config = UNetConfig::from_json(read_json_file(f.unet_config), f.unet_config.string());
  const auto vae_config = VaeConfig::from_json(read_json_file(f.vae_config), f.vae_config.string());
  const auto scheduler_config = LcmSchedulerConfig::from_file(f.scheduler_config);
  ClipTokenizer tokenizer = ClipTokenizer::from_dir(f.tokenizer_dir);
  // The weight files stay mapped only while the models pack their parameters.
  const SafetensorsSource text(f.text_encoder_weights), unet(f.unet_weights), vae(f.vae_weights);
  return std::make_unique<Txt2ImgPipeline>(std::move(tokenizer), text_config, text, unet_config, unet, vae_config, vae,
                                           scheduler_config, precision);
}

GenerateResult Txt2ImgPipeline::run(const GenerateRequest& request, uint64_t seed, const ProgressCallback& progress,
                                    PipelineTrace* trace) const {
  const auto t_start = Clock::now();
  GenerateResult result;
  result.width = request.width;
  result.height = request.height;
  result.seed = seed;
  StageTimings& timings = result.timings;

  // 1-2. Prompt -> CLIP token ids -> text embedding (the UNet's cross-attention context).
  auto t0 = Clock::now();
  const std::vector<int32_t> ids = tokenizer_.encode(request.prompt);
  timings.tokenize_ms = ms_since(t0);
  t0 = Clock::now();
  uint64_t macs0 = ops::macs_done();
  std::optional<Tensor> cached = text_cache_ ? text_cache_->get(ids) : std::nullopt;
  result.text_embedding_cached = cached.has_value();
  const Tensor prompt_embeds = cached ? *cached : text_encoder_.forward({ids});
  if (text_cache_ && !cached) text_cache_->put(ids, prompt_embeds);
  timings.text_encoder_ms = ms_since(t0);

  // 3. Seeded initial latents: the numbers torch.randn gives for this seed, NCHW.
  const int latent_channels = unet_.config().in_channels;
  const int64_t lh = request.height / 8, lw = request.width / 8;
  TorchGenerator generator(seed);
  Tensor latents = generator.randn({1, latent_channels, lh, lw});  // init_noise_sigma is 1

  // 4. LCM denoising. The guidance scale enters through the w-embedding, not a second pass.
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
    trace->w_embedding = w;
    trace->latents_init = latents.clone();
    trace->timesteps = timesteps;
  }
  Tensor denoised(latents.shape());
  t0 = Clock::now();
  const UNetContext context = unet_.prepare_context(prompt_embeds);  // cross-attention K/V, once per image
  timings.text_encoder_ms += ms_since(t0);
  timings.text_encoder_gmac = gmac_since(macs0);
  macs0 = ops::macs_done();
  for (size_t i = 0; i < timesteps.size(); ++i) {
    t0 = Clock::now();
    const Tensor model_pred =
        to_nchw(unet_.forward(to_nhwc(latents), timesteps[i], context, w_embedding.empty() ? nullptr : &w_embedding));
    scheduler_.step(model_pred.data(), static_cast<int>(i), timesteps, latents.data(), denoised.data(),
                    static_cast<size_t>(latents.numel()), generator);
    timings.unet_step_ms.push_back(ms_since(t0));
    timings.unet_step_gmac = gmac_since(macs0) / static_cast<double>(i + 1);
    if (trace) {
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
  Tensor vae_input(denoised.shape());
  const float scaling = vae_.config().scaling_factor;
  for (int64_t i = 0; i < denoised.numel(); ++i) vae_input.data()[i] = denoised.data()[i] / scaling;
  const Tensor decoded = vae_.forward(to_nhwc(vae_input));
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

}  // namespace lcmd
