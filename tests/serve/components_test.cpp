// The serve building blocks on their own: the result cache's LRU bounds, the deadline
// guard's projections (with a hand-driven clock), Prometheus rendering, and the CPU-quota
// thread count.
#include <gtest/gtest.h>

#include <thread>

#include "serve/deadline.h"
#include "serve/metrics.h"
#include "serve/process_stats.h"
#include "serve/result_cache.h"

namespace lcmd::serve {
namespace {

GenerateRequest request(const std::string& prompt, uint64_t seed) {
  GenerateRequest r;
  r.prompt = prompt;
  r.seed = seed;
  return r;
}

TEST(ResultCache, DisabledByDefaultSizes) {
  ResultCache cache(0, 1 << 20);
  EXPECT_FALSE(cache.enabled());
  cache.insert(request("a", 1), {1, 2, 3});
  EXPECT_EQ(cache.find(request("a", 1)), nullptr);
  EXPECT_EQ(cache.stats().misses, 0u);  // a disabled cache does not count lookups
}

TEST(ResultCache, EveryKeyFieldMatters) {
  ResultCache cache(16, 1 << 20);
  const GenerateRequest base = request("a cat", 7);
  cache.insert(base, {1, 2, 3});
  ASSERT_NE(cache.find(base), nullptr);
  EXPECT_EQ(*cache.find(base), (std::vector<uint8_t>{1, 2, 3}));
  GenerateRequest other = base;
  other.prompt = "a dog";
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.seed = 8;
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.width = 512;
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.height = 512;
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.steps = 2;
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.guidance_scale = 8.000000001;
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.negative_prompt = "blurry";
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.decoder = "taesd";
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.prompt = "a ca", other.negative_prompt = "t";  // same bytes, other split
  EXPECT_EQ(cache.find(other), nullptr);
  other = base, other.seed.reset();
  EXPECT_EQ(cache.find(other), nullptr);  // no seed: a random image, never cached
  EXPECT_EQ(cache.stats().hits, 2u);
  EXPECT_EQ(cache.stats().misses, 9u);
}

TEST(ResultCache, EvictsLeastRecentlyUsedWithinBothBounds) {
  ResultCache by_entries(2, 1 << 20);
  by_entries.insert(request("a", 1), {1});
  by_entries.insert(request("b", 1), {2});
  ASSERT_NE(by_entries.find(request("a", 1)), nullptr);  // "a" is now the most recent
  by_entries.insert(request("c", 1), {3});
  EXPECT_NE(by_entries.find(request("a", 1)), nullptr);
  EXPECT_EQ(by_entries.find(request("b", 1)), nullptr);
  EXPECT_NE(by_entries.find(request("c", 1)), nullptr);
  EXPECT_EQ(by_entries.stats().entries, 2u);

  ResultCache by_bytes(100, 330);  // each entry: a 58-byte key + 100 bytes of PNG
  for (int i = 0; i < 5; ++i) by_bytes.insert(request("p", i), std::vector<uint8_t>(100, 0));
  EXPECT_EQ(by_bytes.stats().entries, 2u);
  EXPECT_LE(by_bytes.stats().bytes, 330u);
  EXPECT_NE(by_bytes.find(request("p", 4)), nullptr);
  EXPECT_EQ(by_bytes.find(request("p", 0)), nullptr);
  by_bytes.insert(request("big", 1), std::vector<uint8_t>(1000, 0));  // larger than the bound: not kept
  EXPECT_EQ(by_bytes.find(request("big", 1)), nullptr);
  EXPECT_EQ(by_bytes.stats().entries, 2u);
}

// A clock the test moves by hand.
struct ManualClock {
  int64_t now = 1'000'000;
  DeadlineGuard::Clock clock() {
    return [this] { return now; };
  }
};

TEST(DeadlineGuard, RefusesToStartInsideTheMargin) {
  ManualClock t;
  EXPECT_TRUE(DeadlineGuard(t.now + 600, 500, 0, t.clock()).can_start());
  DeadlineGuard late(t.now + 400, 500, 0, t.clock());
  EXPECT_FALSE(late.can_start());
  EXPECT_NE(late.explain().find("not started"), std::string::npos) << late.explain();
}

TEST(DeadlineGuard, StopsWhenTheRemainingStepsCannotFinish) {
  ManualClock t;
  // Deadline in 10 s, 1 s margin, the decode takes 2 s: steps of 1 s fit 4 steps (4+2 < 9).
  DeadlineGuard fits(t.now + 10'000, 1'000, 2'000, t.clock());
  ProgressCallback progress = fits.progress_callback();
  for (int step = 1; step <= 4; ++step) {
    t.now += 1'000;
    EXPECT_TRUE(progress(step, 4)) << step;
  }
  // The same deadline with 2.5 s steps: after step 1, 3 more steps + decode end at 12.5 s.
  t.now = 1'000'000;
  DeadlineGuard slow(t.now + 10'000, 1'000, 2'000, t.clock());
  progress = slow.progress_callback();
  t.now += 2'500;
  EXPECT_FALSE(progress(1, 4));
  EXPECT_NE(slow.explain().find("stopped after denoising step 1 of 4"), std::string::npos) << slow.explain();
}

TEST(DeadlineGuard, UnknownDecodeTimeCountsAsThreeSteps) {
  ManualClock t;
  // Steps of 1 s, 2 steps, deadline in 4.5 s. A known 0 ms decode: ends at 2 s, fine.
  DeadlineGuard known(t.now + 4'500, 0, 0, t.clock());
  ProgressCallback progress = known.progress_callback();
  t.now += 1'000;
  EXPECT_TRUE(progress(1, 2));
  // Unknown (first run): 1 more step + 3 steps' worth of decode ends at 5 s, past 4.5 s.
  t.now = 1'000'000;
  DeadlineGuard unknown(t.now + 4'500, 0, -1, t.clock());
  progress = unknown.progress_callback();
  t.now += 1'000;
  EXPECT_FALSE(progress(1, 2));
}

TEST(Metrics, RendersPrometheusText) {
  ServerMetrics metrics;
  metrics.count_request("generate", 200, 0.3);
  metrics.count_request("generate", 200, 3.0);
  metrics.count_request("generate", 429, 0.001);
  GenerateOutcome o;
  o.timings.total_ms = 300;
  o.timings.unet_step_ms = {100, 100};
  o.text_embedding_cached = true;
  metrics.count_generation(o);
  o.result_cached = true;
  metrics.count_generation(o);  // a cache hit runs nothing: not a generation
  ServerMetrics::Gauges g;
  g.queue_depth = 3;
  g.queue_capacity = 4;
  g.generating = true;
  g.result_cache.hits = 5;
  const std::string text = metrics.render(g);
  for (const char* expected : {
           "# TYPE lcmd_http_requests_total counter\n",
           "lcmd_http_requests_total{endpoint=\"generate\",status=\"200\"} 2\n",
           "lcmd_http_requests_total{endpoint=\"generate\",status=\"429\"} 1\n",
           "# TYPE lcmd_http_request_duration_seconds histogram\n",
           "lcmd_http_request_duration_seconds_bucket{endpoint=\"generate\",le=\"0.01\"} 1\n",
           "lcmd_http_request_duration_seconds_bucket{endpoint=\"generate\",le=\"0.5\"} 2\n",
           "lcmd_http_request_duration_seconds_bucket{endpoint=\"generate\",le=\"+Inf\"} 3\n",
           "lcmd_http_request_duration_seconds_count{endpoint=\"generate\"} 3\n",
           "lcmd_generation_duration_seconds_count 1\n",
           "lcmd_generations_total 1\n",
           "lcmd_stage_seconds_total{stage=\"unet\"} 0.2\n",
           "lcmd_text_embedding_cache_hits_total 1\n",
           "lcmd_result_cache_hits_total 5\n",
           "lcmd_queue_depth 3\n",
           "lcmd_queue_capacity 4\n",
           "lcmd_generation_in_progress 1\n",
       })
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\nin:\n" << text;
}

TEST(ProcessStats, ThreadsAndMemoryArePlausible) {
  const int threads = default_thread_count();
  EXPECT_GE(threads, 1);
  EXPECT_LE(threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_GT(resident_memory_bytes(), 1 << 20);
  EXPECT_GT(peak_rss_mb(), 1.0);
}

}  // namespace
}  // namespace lcmd::serve
