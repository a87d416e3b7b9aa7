#include <gtest/gtest.h>

#include "pipeline/embedding_cache.h"
#include "pipeline/txt2img.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

Tensor filled(float v, int64_t n = 4) {
  Tensor t({1, n});
  for (int64_t i = 0; i < n; ++i) t.data()[i] = v;
  return t;
}

TEST(EmbeddingCache, EvictsLeastRecentlyUsedByEntries) {
  EmbeddingCache cache(2, 1 << 20);
  cache.put({1}, filled(1));
  cache.put({2}, filled(2));
  ASSERT_TRUE(cache.get({1}).has_value());  // 1 is now the most recent
  cache.put({3}, filled(3));                 // evicts 2
  EXPECT_FALSE(cache.get({2}).has_value());
  EXPECT_EQ(cache.get({1})->data()[0], 1.0f);
  EXPECT_EQ(cache.get({3})->data()[0], 3.0f);
  EXPECT_EQ(cache.entries(), 2u);
  EXPECT_EQ(cache.hits(), 3u);
  EXPECT_EQ(cache.misses(), 1u);
}

TEST(EmbeddingCache, BoundedByBytes) {
  EmbeddingCache cache(100, 40);  // room for two 16-byte tensors
  cache.put({1}, filled(1));
  cache.put({2}, filled(2));
  cache.put({3}, filled(3));
  EXPECT_EQ(cache.entries(), 2u);
  EXPECT_LE(cache.bytes(), 40u);
  EXPECT_FALSE(cache.get({1}).has_value());
  cache.put({4}, filled(4, 100));  // larger than the whole budget: not kept
  EXPECT_FALSE(cache.get({4}).has_value());
  EmbeddingCache off(0, 1 << 20);
  off.put({1}, filled(1));
  EXPECT_FALSE(off.get({1}).has_value());
}

TEST(EmbeddingCache, RepeatedPromptSkipsTheEncoderWithTheSameImage) {
  const auto pipeline = Txt2ImgPipeline::from_folder(ModelFolder::locate(test::golden_dir() / "tiny-lcm"));
  pipeline->set_text_cache(8, 1 << 20);
  GenerateRequest req;
  req.prompt = "a photo of a cat";
  req.steps = 1;
  const GenerateResult first = pipeline->run(req, 3);
  const GenerateResult second = pipeline->run(req, 3);
  EXPECT_FALSE(first.text_embedding_cached);
  EXPECT_TRUE(second.text_embedding_cached);
  EXPECT_EQ(first.rgb, second.rgb);
}

}  // namespace
}  // namespace lcmd
