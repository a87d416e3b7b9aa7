#include "pipeline/embedding_cache.h"

namespace lcmd {

namespace {
size_t tensor_bytes(const Tensor& t) { return static_cast<size_t>(t.numel()) * sizeof(float); }
}  // namespace

std::optional<Tensor> EmbeddingCache::get(const Key& ids) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(ids);
  if (it == index_.end()) {
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->value;  // shares storage; callers only read it
}

void EmbeddingCache::put(const Key& ids, const Tensor& embedding) {
  const size_t size = tensor_bytes(embedding);
  if (max_entries_ == 0 || size > max_bytes_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = index_.find(ids); it != index_.end()) {
    bytes_ -= tensor_bytes(it->second->value);
    lru_.erase(it->second);
    index_.erase(it);
  }
  lru_.push_front({ids, embedding.clone()});
  index_[ids] = lru_.begin();
  bytes_ += size;
  evict_locked();
}

void EmbeddingCache::evict_locked() {
  while (!lru_.empty() && (lru_.size() > max_entries_ || bytes_ > max_bytes_)) {
    bytes_ -= tensor_bytes(lru_.back().value);
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
}

size_t EmbeddingCache::entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lru_.size();
}
size_t EmbeddingCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}
uint64_t EmbeddingCache::hits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return hits_;
}
uint64_t EmbeddingCache::misses() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return misses_;
}

}  // namespace lcmd
