// The public Engine: validation, seeding, locking, and a description of the loaded model.
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "lcmd/engine.h"
#include "ops/ops.h"
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

std::string describe_weights(const std::string& name, const std::filesystem::path& file, const nlohmann::json& config) {
  const SafetensorsFile f = SafetensorsFile::open(file);
  int64_t params = 0;
  std::map<std::string, int64_t> by_dtype;
  for (const TensorInfo& t : f.tensors()) {
    params += shape_numel(t.shape);
    by_dtype[dtype_name(t.dtype)] += shape_numel(t.shape);
  }
  std::ostringstream os;
  os << name << ": " << file.string() << "\n  tensors: " << f.tensors().size() << ", parameters: " << params << " (";
  bool first = true;
  for (const auto& [dtype, n] : by_dtype) os << (first ? "" : ", ") << dtype << " " << n, first = false;
  os << ")\n  config: " << config.dump() << "\n";
  return os.str();
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(const ModelFolder& folder, const EngineOptions& options)
      : folder_(folder), options_(options), pipeline_(Txt2ImgPipeline::from_folder(folder)) {
    pipeline_->set_text_cache(options.text_cache_entries, options.text_cache_bytes);
  }

  GenerateResult generate(const GenerateRequest& request, const ProgressCallback& progress) const override {
    validate(request);
    const uint64_t seed = request.seed ? *request.seed : random_seed();
    std::lock_guard<std::mutex> lock(mutex_);
    return pipeline_->run(request, seed, progress);
  }

  std::vector<int32_t> tokenize(const std::string& prompt) const override { return pipeline_->tokenizer().encode(prompt); }

 private:
  static uint64_t random_seed() {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32 | rd()) >> 1;  // 63 bits: fits every JSON reader's integer
  }

  ModelFolder folder_;
  EngineOptions options_;
  std::unique_ptr<Txt2ImgPipeline> pipeline_;
  mutable std::mutex mutex_;
};

}  // namespace

std::string describe_model_folder(const std::filesystem::path& model_dir) {
  const ModelFolder folder = ModelFolder::locate(model_dir);
  std::ostringstream os;
  os << "model: " << folder.root.string() << "\n";
  os << describe_weights("text_encoder", folder.text_encoder_weights, read_json_file(folder.text_encoder_config));
  os << describe_weights("unet", folder.unet_weights, read_json_file(folder.unet_config));
  os << describe_weights("vae", folder.vae_weights, read_json_file(folder.vae_config));
  os << "scheduler: " << read_json_file(folder.scheduler_config).dump() << "\n";
  const ClipTokenizer tokenizer = ClipTokenizer::from_dir(folder.tokenizer_dir);
  os << "tokenizer: " << folder.tokenizer_dir.string() << " (vocabulary " << tokenizer.vocab_size() << ", max length "
     << tokenizer.max_length() << ")\n";
  os << "precision: fp32 (weights widened to float32 at load)\n";
  return os.str();
}

std::unique_ptr<Engine> Engine::load(const std::filesystem::path& model_dir, const EngineOptions& options) {
  Precision precision;
  if (!parse_precision(options.precision, &precision))
    throw InputError("precision '" + options.precision + "' is not supported; allowed: fp32");
  if (options.threads < 0) throw InputError("threads must be >= 0 (0 = all cores)");
  ops::set_num_threads(options.threads);
  ops::enable_flush_denormals();
  return std::make_unique<EngineImpl>(ModelFolder::locate(model_dir), options);
}

}  // namespace lcmd
