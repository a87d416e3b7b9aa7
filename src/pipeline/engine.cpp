// The public Engine: validation, seeding, locking, and a description of the loaded model.
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/cpu.h"
#include "core/error.h"
#include "io/packed_model.h"
#include "io/safetensors.h"
#include "lcmd/engine.h"
#include "models/ldm_names.h"
#include "models/lora.h"
#include "ops/ops.h"
#include "pipeline/pack.h"
#include "pipeline/precision.h"
#include "pipeline/random_model.h"
#include "pipeline/txt2img.h"

namespace lcmd {

void validate(const GenerateRequest& r) {
  auto side = [](const char* name, int v) {
    if (v <= 0 || v % 8 != 0 || v > kMaxImageSide)
      throw InputError(std::string(name) + " is " + std::to_string(v) + "; it must be a positive multiple of 8, at most " +
                       std::to_string(kMaxImageSide));
  };
  side("width", r.width);
  side("height", r.height);
  if (r.steps < 1 || r.steps > kMaxSteps)
    throw InputError("steps is " + std::to_string(r.steps) + "; allowed 1.." + std::to_string(kMaxSteps));
  if (!std::isfinite(r.guidance_scale)) throw InputError("guidance scale must be a finite number");
}

namespace {

void validate_options(const EngineOptions& options) {
  for (const LoraSpec& lora : options.loras)
    if (!std::isfinite(lora.scale)) throw InputError("LoRA scale of " + lora.path.string() + " must be a finite number");
}

}  // namespace

namespace {

// Tensor and parameter counts by dtype, as `lcmd info` prints them for every kind of model.
struct ParameterCount {
  int64_t tensors = 0, params = 0;
  std::map<std::string, int64_t> by_dtype;

  void add(DType dtype, const Shape& shape) {
    ++tensors;
    params += shape_numel(shape);
    by_dtype[dtype_name(dtype)] += shape_numel(shape);
  }
  // "parameters: 123 (F16 100, F32 23)"
  std::string parameters() const {
    std::ostringstream os;
    os << "parameters: " << params << " (";
    bool first = true;
    for (const auto& [dtype, n] : by_dtype) os << (first ? "" : ", ") << dtype << " " << n, first = false;
    os << ")";
    return os.str();
  }
};

std::string describe_weights(const std::string& name, const std::filesystem::path& file, const nlohmann::json& config) {
  const SafetensorsFile f = SafetensorsFile::open(file);
  ParameterCount count;
  for (const TensorInfo& t : f.tensors()) count.add(t.dtype, t.shape);
  std::ostringstream os;
  os << name << ": " << file.string() << "\n  tensors: " << count.tensors << ", " << count.parameters()
     << "\n  config: " << config.dump() << "\n";
  return os.str();
}

class EngineImpl final : public Engine {
 public:
  // `weights_file`: a packed model whose mapping the layers use in place (kept open while they live).
  EngineImpl(std::unique_ptr<Txt2ImgPipeline> pipeline, const EngineOptions& options, const PipelinePrecision& precision,
             std::shared_ptr<const PackedModelFile> weights_file = nullptr)
      : weights_file_(std::move(weights_file)), pipeline_(std::move(pipeline)), precision_(precision) {
    pipeline_->set_text_cache(options.text_cache_entries, options.text_cache_bytes);
    // TAESD runs fp32: bf16 is no faster at its 64-channel width, and fp32 matches diffusers.
    if (!options.taesd_dir.empty()) pipeline_->load_taesd(options.taesd_dir, Precision::FP32);
    pipeline_->set_default_decoder(options.default_decoder);
  }

  GenerateResult generate(const GenerateRequest& request, const ProgressCallback& progress) const override {
    validate(request);
    const uint64_t seed = request.seed ? *request.seed : random_seed();
    std::lock_guard<std::mutex> lock(mutex_);
    return pipeline_->run(request, seed, progress);
  }

  std::vector<int32_t> tokenize(const std::string& prompt) const override { return pipeline_->tokenizer().encode(prompt); }

  std::string precision() const override { return describe_precision(precision_); }
  int threads() const override { return ops::num_threads(); }

 private:
  static uint64_t random_seed() {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32 | rd()) >> 1;  // 63 bits: fits every JSON reader's integer
  }

  std::shared_ptr<const PackedModelFile> weights_file_;  // declared first: outlives the pipeline
  std::unique_ptr<Txt2ImgPipeline> pipeline_;
  PipelinePrecision precision_;
  mutable std::mutex mutex_;
};

// Checks the options, sets up threads, and turns the precision name into per-model precisions.
PipelinePrecision prepare(const EngineOptions& options) {
  if (options.threads < 0) throw InputError("threads must be >= 0 (0 = all cores)");
  const PipelinePrecision precision = resolve_precision(options.precision, cpu_info());
  ops::set_num_threads(options.threads);
  ops::enable_flush_denormals();  // denormals never slow a run
  return precision;
}

}  // namespace

namespace {

// Tensor and parameter counts by component prefix and dtype, then the configs read from shapes.
std::string describe_single_file(const std::filesystem::path& path, const EngineOptions& options) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  const LdmConfigs c = infer_ldm_configs(f, options.config_dir);
  std::ostringstream os;
  os << "model: " << path.string() << " (single-file LDM checkpoint; "
     << (c.unet.time_cond_proj_dim ? "LCM-distilled UNet with guidance embedding"
                                   : "plain SD UNet: classifier-free guidance when guidance > 1")
     << ")\n";
  struct Part { const char* name; const char* prefix; const nlohmann::json* config; };
  const Part parts[] = {{"text_encoder", kLdmTextPrefix, &c.text_json}, {"unet", kLdmUNetPrefix, &c.unet_json},
                        {"vae", kLdmVaePrefix, &c.vae_json}};
  size_t other = 0;
  for (const TensorInfo& t : f.tensors()) {
    bool known = false;
    for (const Part& p : parts) known |= t.name.starts_with(p.prefix);
    other += !known;
  }
  for (const Part& p : parts) {
    ParameterCount count;
    for (const TensorInfo& t : f.tensors())
      if (t.name.starts_with(p.prefix)) count.add(t.dtype, t.shape);
    os << p.name << ": " << p.prefix << "*\n  tensors: " << count.tensors << ", " << count.parameters()
       << "\n  config: " << p.config->dump() << "\n";
  }
  os << "other tensors (ignored, e.g. EMA copies): " << other << "\n";
  os << "scheduler: " << c.scheduler_json.dump() << "\n";
  return os.str();
}

// The packed file's header: where it came from, what each component holds, its configs.
std::string describe_packed(const std::filesystem::path& path) {
  const PackedModelFile f = PackedModelFile::open(path);
  const nlohmann::json& h = f.header();
  std::ostringstream os;
  os << "model: " << path.string() << " (lcmd packed model, format version " << h.value("version", 0) << ", "
     << f.data_bytes() << " bytes of data; packed by " << h.value("created_by", "?") << " from "
     << h.value("source", "?") << ", dtype " << h.value("dtype", "?") << ")\n";
  if (h.contains("loras") && h["loras"].is_array() && !h["loras"].empty()) os << "merged LoRAs: " << h["loras"].dump() << "\n";
  for (const char* component : {"text_encoder", "unet", "vae"}) {
    const std::string prefix = std::string(component) + ".";
    ParameterCount count;
    for (const PackedTensor& t : f.tensors())
      if (t.name.starts_with(prefix)) count.add(t.dtype, t.shape);
    os << component << ": " << count.tensors << " tensors, " << count.parameters()
       << "\n  config: " << f.config(component).dump() << "\n";
  }
  os << "scheduler: " << f.config("scheduler").dump() << "\n";
  os << "data sha256: " << h["data_sha256"].get<std::string>() << " (lcmd info --verify checks it)\n";
  return os.str();
}

}  // namespace

void verify_model(const std::filesystem::path& model) {
  if (detect_model_layout(model) != ModelLayout::Packed)
    throw InputError(model.string() + ": --verify checks packed models (`lcmd pack`); this is not one");
  PackedModelFile::open(model).verify_data();
}

std::string describe_model(const std::filesystem::path& model, const EngineOptions& options) {
  std::ostringstream os;
  const ModelLayout layout = detect_model_layout(model);
  if (layout == ModelLayout::SingleFile) {
    os << describe_single_file(model, options);
  } else if (layout == ModelLayout::Packed) {
    os << describe_packed(model);
  } else {
    const ModelFolder folder = ModelFolder::locate(model);
    os << "model: " << folder.root.string() << " (" << (folder.pipeline_class.empty() ? "diffusers folder" : folder.pipeline_class)
       << ")\n";
    os << describe_weights("text_encoder", folder.text_encoder_weights, read_json_file(folder.text_encoder_config));
    os << describe_weights("unet", folder.unet_weights, read_json_file(folder.unet_config));
    os << describe_weights("vae", folder.vae_weights, read_json_file(folder.vae_config));
    os << "scheduler: " << read_json_file(folder.scheduler_config).dump() << "\n";
  }
  os << describe_loras(options.loras);
  const ClipTokenizer tokenizer = load_model_tokenizer(model, options.tokenizer_dir, options.config_dir);
  const std::string tokenizer_origin = layout == ModelLayout::Packed && options.tokenizer_dir.empty()
                                           ? "embedded"
                                           : locate_tokenizer(model, options.tokenizer_dir, options.config_dir).string();
  os << "tokenizer: " << tokenizer_origin << " (vocabulary " << tokenizer.vocab_size() << ", max length "
     << tokenizer.max_length() << ")\n";
  const CpuInfo& cpu = cpu_info();
  os << "cpu: " << cpu.model << " (" << cpu.threads << " threads; " << cpu.features() << ")\n";
  os << "default precision on this cpu: " << describe_precision(resolve_precision("auto", cpu))
     << " (weights are converted from their stored dtype at load)\n";
  return os.str();
}

std::unique_ptr<Engine> Engine::load(const std::filesystem::path& model, const EngineOptions& options) {
  validate_options(options);
  const PipelinePrecision precision = prepare(options);
  std::unique_ptr<Txt2ImgPipeline> pipeline;
  std::shared_ptr<const PackedModelFile> packed;
  switch (detect_model_layout(model)) {
    case ModelLayout::SingleFile:
      pipeline = Txt2ImgPipeline::from_single_file(model, options.tokenizer_dir, options.config_dir, precision, options.loras);
      break;
    case ModelLayout::Packed:
      packed = std::make_shared<const PackedModelFile>(PackedModelFile::open(model));
      packed->prefetch_data();
      pipeline = Txt2ImgPipeline::from_parts(ModelParts::from_packed(*packed), precision, options.loras);
      break;
    case ModelLayout::DiffusersFolder:
      pipeline = Txt2ImgPipeline::from_folder(ModelFolder::locate(model), precision, options.loras);
      break;
  }
  return std::make_unique<EngineImpl>(std::move(pipeline), options, precision, std::move(packed));
}

std::unique_ptr<Engine> Engine::load_random(const std::filesystem::path& configs_dir,
                                            const std::filesystem::path& tokenizer_dir, const EngineOptions& options) {
  const PipelinePrecision precision = prepare(options);
  const auto text = ClipTextConfig::from_json(read_json_file(configs_dir / "text_encoder/config.json"),
                                              (configs_dir / "text_encoder/config.json").string());
  const auto unet = UNetConfig::from_json(read_json_file(configs_dir / "unet/config.json"),
                                          (configs_dir / "unet/config.json").string());
  const auto vae =
      VaeConfig::from_json(read_json_file(configs_dir / "vae/config.json"), (configs_dir / "vae/config.json").string());
  const auto scheduler = LcmSchedulerConfig::from_file(configs_dir / "scheduler/scheduler_config.json");
  // The seeds make-random-model uses, so both give the same weights.
  const RandomSource text_weights(kRandomTextEncoderSeed), unet_weights(kRandomUNetSeed), vae_weights(kRandomVaeSeed);
  auto pipeline = std::make_unique<Txt2ImgPipeline>(ClipTokenizer::from_dir(tokenizer_dir), text, text_weights, unet,
                                                    unet_weights, vae, vae_weights, scheduler, precision);
  if (options.taesd_dir.empty() && options.default_decoder == "taesd") pipeline->load_random_taesd(Precision::FP32);
  return std::make_unique<EngineImpl>(std::move(pipeline), options, precision);
}

}  // namespace lcmd
