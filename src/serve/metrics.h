// The HTTP server's counters, rendered in the Prometheus text exposition format (0.0.4) for
// GET /metrics: requests by endpoint and status, latency histograms, stage times, cache hits,
// and the queue gauges.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "serve/request.h"
#include "serve/result_cache.h"

namespace lcmd::serve {

// Cumulative buckets, as Prometheus histograms are.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // name_bucket{labels,le="..."}, name_sum, name_count.
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> upper_bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), the last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class ServerMetrics {
 public:
  // What /metrics reads from elsewhere at the time of the scrape.
  struct Gauges {
    size_t queue_depth = 0, queue_capacity = 0;
    bool generating = false;
    uint64_t queue_dropped = 0;
    ResultCache::Stats result_cache;
    bool result_cache_enabled = false;
    int64_t resident_memory_bytes = 0;
  };

  ServerMetrics();
  // endpoint: a route label such as "generate"; every answered request counts once.
  void count_request(const std::string& endpoint, int status, double seconds);
  void count_generation(const GenerateOutcome& outcome);
  std::string render(const Gauges& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (endpoint, status) → count
  std::map<std::string, Histogram> request_seconds_;          // per endpoint
  Histogram generation_seconds_;
  std::map<std::string, double> stage_seconds_;
  uint64_t generations_ = 0, text_embedding_hits_ = 0;
};

}  // namespace lcmd::serve
