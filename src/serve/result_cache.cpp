#include "serve/result_cache.h"

#include <cstring>

namespace lcmd::serve {

std::string ResultCache::key_of(const GenerateRequest& r) {
  // Fixed-width fields, then the prompt: no two requests share a key. The guidance is keyed
  // by its bits because the engine uses the exact double.
  uint64_t guidance_bits = 0;
  std::memcpy(&guidance_bits, &r.guidance_scale, sizeof guidance_bits);
  const uint64_t fields[] = {*r.seed,         static_cast<uint64_t>(r.width), static_cast<uint64_t>(r.height),
                             static_cast<uint64_t>(r.steps), guidance_bits, r.prompt.size(),
                             r.negative_prompt.size()};
  std::string key(reinterpret_cast<const char*>(fields), sizeof fields);
  return key + r.prompt + r.negative_prompt + "\0" + r.decoder;
}

std::shared_ptr<const std::vector<uint8_t>> ResultCache::find(const GenerateRequest& request) {
  if (!enabled() || !request.seed) return nullptr;
  const std::string key = key_of(request);
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = index_.find(key);
  if (it == index_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void ResultCache::insert(const GenerateRequest& request, std::vector<uint8_t> png) {
  if (!enabled() || !request.seed) return;
  std::string key = key_of(request);
  const size_t bytes = key.size() + png.size();
  if (bytes > max_bytes_) return;  // would evict everything and still not fit
  std::lock_guard<std::mutex> lock(mutex_);
  if (index_.count(key)) return;  // two identical requests raced; the first one is kept
  lru_.emplace_front(key, std::make_shared<const std::vector<uint8_t>>(std::move(png)));
  index_.emplace(std::move(key), lru_.begin());
  stats_.entries += 1;
  stats_.bytes += bytes;
  evict_to_fit();
}

void ResultCache::evict_to_fit() {
  while (stats_.entries > max_entries_ || stats_.bytes > max_bytes_) {
    const Entry& oldest = lru_.back();
    stats_.bytes -= oldest.first.size() + oldest.second->size();
    stats_.entries -= 1;
    index_.erase(oldest.first);
    lru_.pop_back();
  }
}

ResultCache::Stats ResultCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace lcmd::serve
