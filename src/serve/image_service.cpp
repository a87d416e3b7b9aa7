#include "serve/image_service.h"

#include <random>

namespace lcmd::serve {

namespace {

uint64_t random_seed() {
  std::random_device device;
  const uint64_t bits = static_cast<uint64_t>(device()) << 32 | device();
  return bits & ((uint64_t(1) << 53) - 1);
}

}  // namespace

ImageService::ImageService(std::shared_ptr<const Engine> engine, const ServiceOptions& options)
    : engine_(std::move(engine)),
      limits_(options.limits),
      cache_(options.result_cache_entries, options.result_cache_bytes) {
  check_limits(limits_);
}

GenerateOutcome ImageService::generate(GenerateRequest request, const ProgressCallback& progress) {
  if (!request.seed) request.seed = random_seed();
  GenerateOutcome outcome;
  outcome.seed = *request.seed;
  outcome.width = request.width;
  outcome.height = request.height;
  outcome.steps = request.steps;
  outcome.guidance_scale = request.guidance_scale;
  if (const auto cached = cache_.find(request)) {
    outcome.png = *cached;
    outcome.result_cached = true;
    return outcome;
  }
  GenerateResult result = engine_->generate(request, progress);
  outcome.png = std::move(result.png);
  outcome.timings = result.timings;
  outcome.text_embedding_cached = result.text_embedding_cached;
  cache_.insert(request, outcome.png);
  return outcome;
}

}  // namespace lcmd::serve
