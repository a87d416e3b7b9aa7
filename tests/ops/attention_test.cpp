// Attention against a double-precision softmax(q k^T / sqrt d) v with the full score matrix,
// for every kernel this CPU can run (AVX-512 bf16/fp32, AVX2, portable), plus the public
// entry points: precision choice, PackedKV reuse, shape errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "ops/attention_kernels.h"
#include "ops/ops.h"
#include "ops/work_counter.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

using detail::AttentionKernel;
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
  float spread;      // q and k are uniform in [-spread, spread): larger gives peakier softmax rows
  int subtiles = 0;  // sub-tiles per task (0: the kernel's choice)
};

std::string case_name(const AttentionCase& c) {
  return "B" + std::to_string(c.batch) + "_Sq" + std::to_string(c.queries) + "_Sk" + std::to_string(c.keys) + "_H" +
         std::to_string(c.heads) + "_d" + std::to_string(c.head_dim) + (c.causal ? "_causal" : "") +
         (c.subtiles ? "_sub" + std::to_string(c.subtiles) : "");
}

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << case_name(c); }

const AttentionCase kCases[] = {
    {2, 70, 77, 2, 40, false, 1.f},       // cross-attention, 77 text tokens, batch 2
    {1, 301, 300, 2, 80, false, 1.f},     // several tiles, the last one partial
    {2, 64, 77, 2, 160, false, 1.f},      // d = 160
    {1, 130, 130, 1, 512, false, 0.5f},   // VAE mid-block: one head, d = 512
    {1, 100, 4096, 1, 40, false, 1.f},    // 4096 keys: many key blocks
    {1, 40, 1000, 2, 64, false, 4.f},     // d = 64, peaky rows, a partial last key block
    {2, 77, 77, 3, 64, true, 1.f},        // CLIP text encoder: causal
    {1, 301, 301, 2, 8, true, 2.f},       // causal over many tiles (last partial), d = 8
    {1, 200, 300, 1, 40, true, 1.f},      // causal with more keys than queries
    {2, 16, 16, 4, 8, false, 3.f},        // tiny UNet: peaky rows
    {1, 1, 5, 1, 4, false, 1.f},          // one query
    {1, 45, 33, 3, 7, false, 1.f},        // odd d: padded V, an unpaired bf16 channel
    {1, 45, 33, 1, 7, true, 1.f},         // odd d, odd key count, causal
    {1, 300, 250, 2, 40, false, 1.f, 3},  // 3 sub-tiles per task, the last task partial
    {1, 300, 250, 2, 40, true, 1.f, 3},   // the same, causal: sub-tiles see different key ranges
    {1, 100, 100, 1, 512, true, 0.5f, 2},
};

// fp32 kernels: the accuracy of a double-precision computation rounded to float; bf16 kernels:
// q, k, v and the softmax weights rounded to bfloat16 (8 significant bits).
constexpr double kFp32Rel = 2e-6, kFp32AbsFrac = 5e-6, kBf16Rel = 1e-2, kBf16AbsFrac = 2e-2;

class AttentionKernelTest : public ::testing::TestWithParam<std::tuple<const AttentionKernel*, AttentionCase>> {};

TEST_P(AttentionKernelTest, MatchesDoubleSoftmax) {
  const auto& [kernel, c] = GetParam();
  const int64_t channels = c.heads * c.head_dim;
  const Tensor q = random_tensor({c.batch, c.queries, channels}, 51, -c.spread, c.spread);
  const Tensor k = random_tensor({c.batch, c.keys, channels}, 52, -c.spread, c.spread);
  const Tensor v = random_tensor({c.batch, c.keys, channels}, 53);
  const Tensor out = detail::attention_with(*kernel, q, k, v, c.heads, c.causal, c.subtiles);
  ASSERT_EQ(out.shape(), q.shape());
  const std::vector<double> ref = attention_reference(q, k, v, c.heads, c.causal);
  if (kernel->bf16)
    EXPECT_TRUE(matches_reference(out, ref, kBf16Rel, kBf16AbsFrac));
  else
    EXPECT_TRUE(matches_reference(out, ref, kFp32Rel, kFp32AbsFrac));
}

TEST_P(AttentionKernelTest, PackedKVGivesTheSameResult) {
  const auto& [kernel, c] = GetParam();
  const int64_t channels = c.heads * c.head_dim;
  const Tensor k = random_tensor({c.batch, c.keys, channels}, 62), v = random_tensor({c.batch, c.keys, channels}, 63);
  const PackedKV packed = detail::pack_kv_with(*kernel, k, v, c.heads);
  EXPECT_EQ(packed.kernel_name(), std::string(kernel->name));
  for (uint32_t seed : {64u, 65u}) {  // one pack, several queries
    const Tensor q = random_tensor({c.batch, c.queries, channels}, seed, -c.spread, c.spread);
    const Tensor unpacked = detail::attention_with(*kernel, q, k, v, c.heads, c.causal);
    const Tensor out = attention(q, packed, c.causal);
    ASSERT_EQ(out.shape(), unpacked.shape());
    for (int64_t i = 0; i < out.numel(); ++i) ASSERT_EQ(out.data()[i], unpacked.data()[i]) << "element " << i;
  }
}

std::vector<const AttentionKernel*> kernels() { return detail::runnable_attention_kernels(); }

std::string param_name(const ::testing::TestParamInfo<AttentionKernelTest::ParamType>& info) {
  std::string kernel = std::get<0>(info.param)->name;
  std::replace(kernel.begin(), kernel.end(), '-', '_');
  return kernel + "_" + case_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(AllKernels, AttentionKernelTest,
                         ::testing::Combine(::testing::ValuesIn(kernels()), ::testing::ValuesIn(kCases)), param_name);

class AttentionEveryKernel : public ::testing::TestWithParam<const AttentionKernel*> {};

TEST_P(AttentionEveryKernel, CausalFirstQuerySeesOnlyTheFirstKey) {
  const AttentionKernel& kernel = *GetParam();
  const Tensor q = random_tensor({1, 6, 8}, 54), k = random_tensor({1, 6, 8}, 55), v = random_tensor({1, 6, 8}, 56);
  const Tensor out = detail::attention_with(kernel, q, k, v, 2, true);
  for (int c = 0; c < 8; ++c) {
    if (kernel.bf16)  // v itself, rounded to bf16 and back
      EXPECT_NEAR(out.data()[c], v.data()[c], std::abs(v.data()[c]) * 4e-3);
    else
      EXPECT_FLOAT_EQ(out.data()[c], v.data()[c]);
  }
}

TEST_P(AttentionEveryKernel, HugeScoresStayAccurateAndConvex) {
  // Scores up to ~1e4: e^s overflows float unless the row maximum is subtracted first. Their
  // float rounding (~1e-3 absolute at that size) is amplified by exp, hence the looser bound.
  const AttentionKernel& kernel = *GetParam();
  const Tensor q = random_tensor({1, 40, 32}, 57, -25.f, 25.f), k = random_tensor({1, 50, 32}, 58, -25.f, 25.f);
  const Tensor v = random_tensor({1, 50, 32}, 59);
  const Tensor out = detail::attention_with(kernel, q, k, v, 2, false);
  for (int64_t c = 0; c < 32; ++c) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t j = 0; j < 50; ++j) {
      lo = std::min(lo, v.data()[j * 32 + c]);
      hi = std::max(hi, v.data()[j * 32 + c]);
    }
    for (int64_t i = 0; i < 40; ++i) {
      const float o = out.data()[i * 32 + c];
      ASSERT_TRUE(std::isfinite(o)) << i << " " << c;
      ASSERT_GE(o, lo - 1e-2f);
      ASSERT_LE(o, hi + 1e-2f);
    }
  }
  if (!kernel.bf16) {
    EXPECT_TRUE(matches_reference(out, attention_reference(q, k, v, 2, false), 1e-3, 1e-3));
  }
}

TEST_P(AttentionEveryKernel, NoQueriesGiveAnEmptyOutput) {
  const Tensor q = Tensor::zeros({2, 0, 16}), k = random_tensor({2, 5, 16}, 60);
  const Tensor out = detail::attention_with(*GetParam(), q, k, k, 2, false);
  EXPECT_EQ(out.shape(), q.shape());
}

std::string kernel_name(const ::testing::TestParamInfo<const AttentionKernel*>& info) {
  std::string name = info.param->name;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(AllKernels, AttentionEveryKernel, ::testing::ValuesIn(kernels()), kernel_name);

TEST(AttentionKernels, EveryCpuHasAnFp32KernelAndThePortableOne) {
  const auto runnable = kernels();
  ASSERT_FALSE(runnable.empty());
  EXPECT_EQ(std::string(runnable.back()->name), "portable");
  EXPECT_FALSE(detail::best_attention_kernel(false).bf16);
  EXPECT_EQ(std::string(attention_kernel_name(AttentionPrecision::FP32)), detail::best_attention_kernel(false).name);
  // BF16 is a bf16 kernel exactly when the CPU has one.
  const bool has_bf16 = std::any_of(runnable.begin(), runnable.end(), [](auto* k) { return k->bf16; });
  EXPECT_EQ(detail::best_attention_kernel(true).bf16, has_bf16);
}

TEST(Attention, PublicEntryPointsMatchTheReference) {
  const Tensor q = random_tensor({1, 90, 80}, 70), k = random_tensor({1, 77, 80}, 71),
               v = random_tensor({1, 77, 80}, 72);
  const std::vector<double> ref = attention_reference(q, k, v, 2, false);
  EXPECT_TRUE(matches_reference(attention(q, k, v, 2, false), ref, kFp32Rel, kFp32AbsFrac));
  EXPECT_TRUE(matches_reference(attention(q, PackedKV(k, v, 2), false), ref, kFp32Rel, kFp32AbsFrac));
  const Tensor bf16 = attention(q, k, v, 2, false, AttentionPrecision::BF16);
  EXPECT_TRUE(matches_reference(bf16, ref, kBf16Rel, kBf16AbsFrac));
  const Tensor bf16_packed = attention(q, PackedKV(k, v, 2, AttentionPrecision::BF16));
  for (int64_t i = 0; i < bf16.numel(); ++i) ASSERT_EQ(bf16_packed.data()[i], bf16.data()[i]) << "element " << i;
}

TEST(Attention, CountsItsMultiplyAccumulates) {
  const Tensor q = random_tensor({2, 9, 12}, 74), k = random_tensor({2, 7, 12}, 75);
  const uint64_t before = macs_done();
  attention(q, k, k, 3, false);
  EXPECT_EQ(macs_done() - before, 2u * 2 * 9 * 7 * 12);  // Q K^T and P V
}

TEST(Attention, PackedKVDescribesItsShape) {
  const Tensor k = random_tensor({2, 7, 12}, 73);
  const PackedKV packed(k, k, 3);
  EXPECT_FALSE(packed.empty());
  EXPECT_EQ(packed.batch(), 2);
  EXPECT_EQ(packed.keys(), 7);
  EXPECT_EQ(packed.channels(), 12);
  EXPECT_EQ(packed.heads(), 3);
  EXPECT_TRUE(PackedKV().empty());
}

TEST(Attention, BadShapesThrow) {
  const Tensor q = Tensor::zeros({1, 4, 8}), k = Tensor::zeros({1, 5, 8}), k6 = Tensor::zeros({1, 5, 6});
  EXPECT_THROW(attention(q, k, k6, 2, false), std::invalid_argument);   // v differs from k
  EXPECT_THROW(attention(q, k6, k6, 2, false), std::invalid_argument);  // channel mismatch
  EXPECT_THROW(attention(q, k, k, 3, false), std::invalid_argument);    // 8 channels, 3 heads
  EXPECT_THROW(attention(q, k, k, 0, false), std::invalid_argument);
  EXPECT_THROW(attention(Tensor::zeros({4, 8}), k, k, 2, false), std::invalid_argument);
  EXPECT_THROW(attention(q, Tensor::zeros({1, 0, 8}), Tensor::zeros({1, 0, 8}), 2, false), std::invalid_argument);
  EXPECT_THROW(PackedKV(k, k6, 2), std::invalid_argument);
  const PackedKV packed(k, k, 2);
  EXPECT_THROW(attention(Tensor::zeros({2, 4, 8}), packed), std::invalid_argument);  // batch differs
  EXPECT_THROW(attention(Tensor::zeros({1, 4, 6}), packed), std::invalid_argument);  // channels differ
  EXPECT_THROW(attention(q, PackedKV()), std::invalid_argument);
}

}  // namespace
}  // namespace lcmd::ops
