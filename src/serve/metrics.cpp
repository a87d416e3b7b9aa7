#include "serve/metrics.h"

#include <charconv>
#include <numeric>

namespace lcmd::serve {

namespace {

// Seconds: from a cached 64x64 answer to a 768x768 run on a small machine.
const std::vector<double> kLatencyBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120};

// The shortest text that reads back as the same double ("0.025", not "0.025000000000000001").
std::string number(double v) {
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, v);
  return std::string(buffer, result.ptr);
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, const std::string& labels, double value) {
  out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + number(value) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t bucket = 0;
  while (bucket < upper_bounds_.size() && value > upper_bounds_[bucket]) ++bucket;
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string prefix = labels.empty() ? "" : labels + ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < upper_bounds_.size() ? number(upper_bounds_[i]) : "+Inf";
    sample(out, name + "_bucket", prefix + "le=\"" + le + "\"", static_cast<double>(cumulative));
  }
  sample(out, name + "_sum", labels, sum_);
  sample(out, name + "_count", labels, static_cast<double>(count_));
}

ServerMetrics::ServerMetrics() : generation_seconds_(kLatencyBuckets) {
  for (const char* stage : {"text_encoder", "unet", "vae_decode", "png"}) stage_seconds_[stage] = 0;
}

void ServerMetrics::count_request(const std::string& endpoint, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{endpoint, status}];
  request_seconds_.try_emplace(endpoint, kLatencyBuckets).first->second.observe(seconds);
}

void ServerMetrics::count_generation(const GenerateOutcome& o) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (o.result_cached) return;  // nothing ran; the cache counters say it
  ++generations_;
  if (o.text_embedding_cached) ++text_embedding_hits_;
  generation_seconds_.observe(o.timings.total_ms / 1000);
  const auto& steps = o.timings.unet_step_ms;
  stage_seconds_["text_encoder"] += o.timings.text_encoder_ms / 1000;
  stage_seconds_["unet"] += std::accumulate(steps.begin(), steps.end(), 0.0) / 1000;
  stage_seconds_["vae_decode"] += o.timings.vae_decode_ms / 1000;
  stage_seconds_["png"] += o.timings.png_ms / 1000;
}

std::string ServerMetrics::render(const Gauges& g) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  header(out, "lcmd_http_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
  for (const auto& [key, count] : requests_)
    sample(out, "lcmd_http_requests_total",
           "endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"", static_cast<double>(count));
  header(out, "lcmd_http_request_duration_seconds", "histogram", "Time from request to response, by endpoint.");
  for (const auto& [endpoint, histogram] : request_seconds_)
    histogram.render(out, "lcmd_http_request_duration_seconds", "endpoint=\"" + endpoint + "\"");
  header(out, "lcmd_generation_duration_seconds", "histogram", "Engine time of one image (queue wait excluded).");
  generation_seconds_.render(out, "lcmd_generation_duration_seconds", "");
  header(out, "lcmd_generations_total", "counter", "Images the engine made (result-cache hits excluded).");
  sample(out, "lcmd_generations_total", "", static_cast<double>(generations_));
  header(out, "lcmd_stage_seconds_total", "counter", "Engine time spent per pipeline stage.");
  for (const auto& [stage, seconds] : stage_seconds_)
    sample(out, "lcmd_stage_seconds_total", "stage=\"" + stage + "\"", seconds);
  header(out, "lcmd_text_embedding_cache_hits_total", "counter",
         "Generations whose prompt embedding came from the cache.");
  sample(out, "lcmd_text_embedding_cache_hits_total", "", static_cast<double>(text_embedding_hits_));
  header(out, "lcmd_result_cache_enabled", "gauge", "1 when the result cache is on.");
  sample(out, "lcmd_result_cache_enabled", "", g.result_cache_enabled ? 1 : 0);
  header(out, "lcmd_result_cache_hits_total", "counter", "Requests answered from the result cache.");
  sample(out, "lcmd_result_cache_hits_total", "", static_cast<double>(g.result_cache.hits));
  header(out, "lcmd_result_cache_misses_total", "counter", "Result-cache lookups that found nothing.");
  sample(out, "lcmd_result_cache_misses_total", "", static_cast<double>(g.result_cache.misses));
  header(out, "lcmd_result_cache_entries", "gauge", "Images held by the result cache.");
  sample(out, "lcmd_result_cache_entries", "", static_cast<double>(g.result_cache.entries));
  header(out, "lcmd_result_cache_bytes", "gauge", "Bytes held by the result cache.");
  sample(out, "lcmd_result_cache_bytes", "", static_cast<double>(g.result_cache.bytes));
  header(out, "lcmd_queue_depth", "gauge", "Requests waiting for the generation slot.");
  sample(out, "lcmd_queue_depth", "", static_cast<double>(g.queue_depth));
  header(out, "lcmd_queue_capacity", "gauge", "Requests that may wait before new ones get 429.");
  sample(out, "lcmd_queue_capacity", "", static_cast<double>(g.queue_capacity));
  header(out, "lcmd_generation_in_progress", "gauge", "1 while an image is being generated.");
  sample(out, "lcmd_generation_in_progress", "", g.generating ? 1 : 0);
  header(out, "lcmd_queue_dropped_total", "counter", "Queued requests dropped because their client disconnected.");
  sample(out, "lcmd_queue_dropped_total", "", static_cast<double>(g.queue_dropped));
  header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  sample(out, "process_resident_memory_bytes", "", static_cast<double>(g.resident_memory_bytes));
  return out;
}

}  // namespace lcmd::serve
