// The one object both front ends drive: the engine (loaded once per process), the request
// limits, and the optional result cache. It turns a validated request into a GenerateOutcome.
#pragma once
#include <memory>

#include "lcmd/engine.h"
#include "serve/request.h"
#include "serve/result_cache.h"

namespace lcmd::serve {

struct ServiceOptions {
  RequestLimits limits;
  size_t result_cache_entries = 0;  // 0 = no result cache (the default)
  size_t result_cache_bytes = size_t(256) << 20;
};

class ImageService {
 public:
  ImageService(std::shared_ptr<const Engine> engine, const ServiceOptions& options);

  // Runs the request, or answers it from the result cache. A request without a seed gets a
  // random one below 2^53, so the echoed seed is exact in every JSON reader (JavaScript's
  // numbers included) and can be sent back to reproduce the image. Throws what the engine
  // throws: InputError, CancelledError when `progress` returns false, runtime errors.
  GenerateOutcome generate(GenerateRequest request, const ProgressCallback& progress = {});

  const RequestLimits& limits() const { return limits_; }
  ResultCache::Stats result_cache_stats() const { return cache_.stats(); }
  bool result_cache_enabled() const { return cache_.enabled(); }

 private:
  std::shared_ptr<const Engine> engine_;
  RequestLimits limits_;
  ResultCache cache_;
};

}  // namespace lcmd::serve
