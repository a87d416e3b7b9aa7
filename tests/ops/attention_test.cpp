// Attention against a double-precision softmax(q k^T / sqrt d) v with the full score matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/ops.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

using test::matches_reference;
using test::random_tensor;

std::vector<double> attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const int64_t batch = q.dim(0), queries = q.dim(1), keys = k.dim(1), channels = q.dim(2);
  const int64_t d = channels / heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> out(q.numel()), p(keys);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < queries; ++i) {
        const float* qi = q.data() + (b * queries + i) * channels + h * d;
        const int64_t valid = causal ? std::min(keys, i + 1) : keys;
        double max = -INFINITY, sum = 0;
        for (int64_t j = 0; j < valid; ++j) {
          const float* kj = k.data() + (b * keys + j) * channels + h * d;
          double s = 0;
          for (int64_t c = 0; c < d; ++c) s += static_cast<double>(qi[c]) * kj[c];
          p[j] = s * scale;
          max = std::max(max, p[j]);
        }
        for (int64_t j = 0; j < valid; ++j) sum += p[j] = std::exp(p[j] - max);
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < valid; ++j) acc += p[j] * v.data()[(b * keys + j) * channels + h * d + c];
          out[(b * queries + i) * channels + h * d + c] = acc / sum;
        }
      }
  return out;
}

struct AttentionCase {
  int64_t batch, queries, keys;
  int heads, head_dim;
  bool causal;
  float spread;  // q and k are uniform in [-spread, spread): larger gives peakier softmax rows
};

std::string case_name(const AttentionCase& c) {
  return "B" + std::to_string(c.batch) + " Sq" + std::to_string(c.queries) + " Sk" + std::to_string(c.keys) + " H" +
         std::to_string(c.heads) + " d" + std::to_string(c.head_dim) + (c.causal ? " causal" : "");
}

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << case_name(c); }

class AttentionAgainstReference : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionAgainstReference, MatchesDoubleSoftmax) {
  const AttentionCase c = GetParam();
  SCOPED_TRACE(case_name(c));
  const int64_t channels = c.heads * c.head_dim;
  const Tensor q = random_tensor({c.batch, c.queries, channels}, 51, -c.spread, c.spread);
  const Tensor k = random_tensor({c.batch, c.keys, channels}, 52, -c.spread, c.spread);
  const Tensor v = random_tensor({c.batch, c.keys, channels}, 53);
  const Tensor out = attention(q, k, v, c.heads, c.causal);
  ASSERT_EQ(out.shape(), q.shape());
  EXPECT_TRUE(matches_reference(out, attention_reference(q, k, v, c.heads, c.causal), 2e-6, 5e-6));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionAgainstReference,
    ::testing::Values(AttentionCase{2, 70, 77, 2, 40, false, 1.f},     // cross-attention, 77 text tokens
                      AttentionCase{1, 301, 300, 2, 80, false, 1.f},   // 2 query blocks, the last one partial
                      AttentionCase{2, 64, 77, 2, 160, false, 1.f},    // d = 160
                      AttentionCase{1, 130, 130, 1, 512, false, 0.5f}, // VAE mid-block: one head, d = 512
                      AttentionCase{1, 100, 4096, 1, 40, false, 1.f},  // 4096 keys: 7 blocks of 15 rows, last 10
                      AttentionCase{2, 77, 77, 3, 64, true, 1.f},      // CLIP text encoder: causal
                      AttentionCase{1, 301, 301, 2, 8, true, 2.f},     // causal over blocks (last partial), d = 8
                      AttentionCase{2, 16, 16, 4, 8, false, 3.f},      // tiny UNet: peaky rows
                      AttentionCase{1, 1, 5, 1, 4, false, 1.f}));      // one query

TEST(Attention, CausalFirstQuerySeesOnlyTheFirstKey) {
  const Tensor q = random_tensor({1, 6, 8}, 54), k = random_tensor({1, 6, 8}, 55), v = random_tensor({1, 6, 8}, 56);
  const Tensor out = attention(q, k, v, 2, true);
  for (int c = 0; c < 8; ++c) EXPECT_FLOAT_EQ(out.data()[c], v.data()[c]);
}

TEST(Attention, HugeScoresStayFiniteConvexCombinations) {
  // Scores up to ~1e4: e^s overflows float unless the row maximum is subtracted first.
  const Tensor q = random_tensor({1, 40, 32}, 57, -25.f, 25.f), k = random_tensor({1, 50, 32}, 58, -25.f, 25.f);
  const Tensor v = random_tensor({1, 50, 32}, 59);
  const Tensor out = attention(q, k, v, 2, false);
  for (int64_t c = 0; c < 32; ++c) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t j = 0; j < 50; ++j) {
      lo = std::min(lo, v.data()[j * 32 + c]);
      hi = std::max(hi, v.data()[j * 32 + c]);
    }
    for (int64_t i = 0; i < 40; ++i) {
      const float o = out.data()[i * 32 + c];
      ASSERT_TRUE(std::isfinite(o)) << i << " " << c;
      ASSERT_GE(o, lo - 1e-6f);
      ASSERT_LE(o, hi + 1e-6f);
    }
  }
}

TEST(Attention, BadShapesThrow) {
  const Tensor q = Tensor::zeros({1, 4, 8}), k = Tensor::zeros({1, 5, 8}), k6 = Tensor::zeros({1, 5, 6});
  EXPECT_THROW(attention(q, k, k6, 2, false), std::invalid_argument);        // v differs from k
  EXPECT_THROW(attention(q, k6, k6, 2, false), std::invalid_argument);       // channel mismatch
  EXPECT_THROW(attention(q, k, k, 3, false), std::invalid_argument);         // 8 channels, 3 heads
  EXPECT_THROW(attention(Tensor::zeros({4, 8}), k, k, 2, false), std::invalid_argument);
}

}  // namespace
}  // namespace lcmd::ops
