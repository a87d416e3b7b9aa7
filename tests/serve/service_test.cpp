// ImageService (seeds, result cache) and GenerationQueue (one at a time, FIFO, the bound,
// abandoned tickets, close) on the real tiny engine, in process.
#include <gtest/gtest.h>

#include "core/error.h"
#include "serve/generation_queue.h"
#include "serve/image_service.h"
#include "serve_test_util.h"

namespace lcmd::serve {
namespace {

using namespace std::chrono_literals;

GenerateRequest small_request(uint64_t seed, int side = 64, int steps = 2) {
  GenerateRequest r;
  r.prompt = "a lighthouse at dusk";
  r.width = r.height = side;
  r.steps = steps;
  r.seed = seed;
  return r;
}

TEST(ImageService, ReproducesTheCliImageAndEchoesTheSeed) {
  ImageService service(test::tiny_engine(), {});
  const GenerateOutcome o = service.generate(small_request(11));
  EXPECT_EQ(o.seed, 11u);
  EXPECT_EQ(o.width, 64);
  EXPECT_EQ(o.steps, 2);
  EXPECT_EQ(o.timings.unet_step_ms.size(), 2u);
  EXPECT_EQ(o.png, test::cli_png("a lighthouse at dusk", 11, 64, 64, 2));
}

TEST(ImageService, RandomSeedsAreExactInJavaScript) {
  ImageService service(test::tiny_engine(), {});
  GenerateRequest r = small_request(0, 8, 1);
  r.seed.reset();
  for (int i = 0; i < 3; ++i) EXPECT_LT(service.generate(r).seed, uint64_t(1) << 53);
}

TEST(ImageService, ResultCacheAnswersRepeatsWithTheSamePng) {
  ServiceOptions options;
  options.result_cache_entries = 4;
  ImageService service(test::tiny_engine(), options);
  const GenerateOutcome first = service.generate(small_request(5));
  const GenerateOutcome second = service.generate(small_request(5));
  EXPECT_FALSE(first.result_cached);
  EXPECT_TRUE(second.result_cached);
  EXPECT_EQ(second.png, first.png);
  EXPECT_TRUE(second.timings.unet_step_ms.empty());  // nothing ran
  EXPECT_FALSE(service.generate(small_request(6)).result_cached);
  EXPECT_EQ(service.result_cache_stats().hits, 1u);
  EXPECT_EQ(service.result_cache_stats().misses, 2u);
  ImageService uncached(test::tiny_engine(), {});
  uncached.generate(small_request(5));
  EXPECT_FALSE(uncached.generate(small_request(5)).result_cached);  // off by default
}

TEST(ImageService, InvalidRequestsAreInputErrors) {
  ImageService service(test::tiny_engine(), {});
  GenerateRequest r = small_request(1);
  r.width = 63;
  EXPECT_THROW(service.generate(r), InputError);
}

TEST(GenerationQueue, BoundsTheQueueDropsAbandonedTicketsAndCloses) {
  ImageService service(test::tiny_engine(), {});
  GenerationQueue queue(service, 2);
  const auto always = [] { return true; };
  const auto never = [] { return false; };

  // A long run occupies the generation slot until the test abandons it.
  const auto long_run = queue.submit(small_request(1, 512, 8));
  ASSERT_TRUE(test::eventually([&] { return queue.running(); }, 10s));
  const auto a = queue.submit(small_request(2));
  const auto b = queue.submit(small_request(3));
  EXPECT_EQ(queue.waiting(), 2u);
  try {
    queue.submit(small_request(4));
    ADD_FAILURE() << "a third waiting request was admitted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 429);
    ASSERT_TRUE(e.retry_after_seconds.has_value());
    EXPECT_GE(*e.retry_after_seconds, 1);
  }

  EXPECT_FALSE(queue.wait(a, never, 10ms).has_value());  // the client of `a` left while it waited
  EXPECT_EQ(queue.waiting(), 1u);
  EXPECT_EQ(queue.dropped(), 1u);
  EXPECT_FALSE(queue.wait(long_run, never, 10ms).has_value());  // stops at its next step

  const std::optional<GenerateOutcome> done = queue.wait(b, always);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->seed, 3u);
  EXPECT_GT(done->queue_ms, 0.0);
  EXPECT_FALSE(queue.running());

  queue.close();
  try {
    queue.submit(small_request(5));
    ADD_FAILURE() << "a closed queue admitted a request";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
  }
}

TEST(GenerationQueue, RunsInArrivalOrderAndCloseFailsTheWaiting) {
  ImageService service(test::tiny_engine(), {});
  GenerationQueue queue(service, 8);
  std::vector<std::shared_ptr<GenerationQueue::Ticket>> tickets;
  for (uint64_t seed = 0; seed < 4; ++seed) tickets.push_back(queue.submit(small_request(seed, 64, 1)));
  double previous_wait = -1;
  for (const auto& ticket : tickets) {
    const auto outcome = queue.wait(ticket, [] { return true; });
    ASSERT_TRUE(outcome.has_value());
    EXPECT_GT(outcome->queue_ms, previous_wait);  // each waited longer than the one before it
    previous_wait = outcome->queue_ms;
  }

  const auto running = queue.submit(small_request(9, 512, 8));
  ASSERT_TRUE(test::eventually([&] { return queue.running(); }, 10s));
  const auto waiting = queue.submit(small_request(10));
  queue.close();
  try {
    queue.wait(waiting, [] { return true; });
    ADD_FAILURE() << "a waiting request survived close()";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
  }
  const auto finished = queue.wait(running, [] { return true; });  // the running one finishes
  ASSERT_TRUE(finished.has_value());
  EXPECT_EQ(finished->width, 512);
  queue.wait_until_idle();
}

}  // namespace
}  // namespace lcmd::serve
