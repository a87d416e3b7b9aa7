// Optional cache of finished images (off by default): the same prompt, seed, size, steps and
// guidance give the same PNG, so a repeated request is answered without running the model.
// One process serves one model with one precision, so the model is implied by the process.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "lcmd/engine.h"

namespace lcmd::serve {

class ResultCache {
 public:
  struct Stats {
    uint64_t hits = 0, misses = 0;
    size_t entries = 0, bytes = 0;
  };

  // Bounded by both counts; 0 entries disables the cache (every lookup misses, nothing is kept).
  ResultCache(size_t max_entries, size_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}

  bool enabled() const { return max_entries_ > 0 && max_bytes_ > 0; }
  // The PNG for a request that has a seed, or null. Counts a hit or a miss when enabled.
  std::shared_ptr<const std::vector<uint8_t>> find(const GenerateRequest& request);
  // Keeps the PNG, evicting the least recently used entries to stay within both bounds.
  void insert(const GenerateRequest& request, std::vector<uint8_t> png);
  Stats stats() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const std::vector<uint8_t>>>;
  static std::string key_of(const GenerateRequest& request);
  void evict_to_fit();

  const size_t max_entries_, max_bytes_;
  mutable std::mutex mutex_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  Stats stats_;
};

}  // namespace lcmd::serve
