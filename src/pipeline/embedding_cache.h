// An LRU cache of text-encoder outputs keyed by token ids, bounded by entry count and bytes.
// Popular prompts skip the text encoder. Thread-safe.
#pragma once
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "core/tensor.h"

namespace lcmd {

class EmbeddingCache {
 public:
  EmbeddingCache(size_t max_entries, size_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}

  std::optional<Tensor> get(const std::vector<int32_t>& ids);
  void put(const std::vector<int32_t>& ids, const Tensor& embedding);

  size_t entries() const;
  size_t bytes() const;
  uint64_t hits() const;
  uint64_t misses() const;

 private:
  using Key = std::vector<int32_t>;
  struct Entry {
    Key key;
    Tensor value;
  };
  void evict_locked();

  size_t max_entries_, max_bytes_;
  mutable std::mutex mutex_;
  std::list<Entry> lru_;  // most recent first
  std::map<Key, std::list<Entry>::iterator> index_;
  size_t bytes_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace lcmd
