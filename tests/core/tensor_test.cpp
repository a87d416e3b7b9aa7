#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace lcmd {

TEST(Tensor, NhwcRoundTripMovesChannelsLast) {
  Tensor x({1, 2, 2, 3});  // NCHW: C=2, H=2, W=3
  for (int i = 0; i < 12; ++i) x.data()[i] = static_cast<float>(i);
  Tensor y = to_nhwc(x);
  ASSERT_EQ(y.shape(), (Shape{1, 2, 3, 2}));
  // element (c=1, h=0, w=2) = 1*6 + 0*3 + 2 = 8 sits at nhwc (h=0, w=2, c=1) = (0*3+2)*2+1 = 5
  EXPECT_EQ(y.data()[5], 8.0f);
  Tensor z = to_nchw(y);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(z.data()[i], static_cast<float>(i));
}

TEST(Tensor, ReshapeRejectsWrongCount) {
  Tensor x({2, 3});
  EXPECT_THROW(x.reshape({4, 2}), std::invalid_argument);
  EXPECT_EQ(x.reshape({3, 2}).data(), x.data());
}

TEST(DType, F16RoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    if ((v & 0x7c00) == 0x7c00 && (v & 0x3ff)) continue;  // NaN payloads
    ASSERT_EQ(f32_to_f16(f16_to_f32(v)), v) << std::hex << h;
  }
}

TEST(DType, F16RoundsToNearestEven) {
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 1.0f / 2048)), 1.0f);              // tie -> even (down)
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 3.0f / 2048)), 1.0f + 2.0f / 1024);  // tie -> even (up)
  EXPECT_EQ(f16_to_f32(f32_to_f16(65520.0f)), INFINITY);
  EXPECT_EQ(f16_to_f32(f32_to_f16(5.9604645e-08f)), 5.9604645e-08f);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(f32_to_f16(2.9802322e-08f)), 0.0f);            // half of it: tie -> 0
}

TEST(DType, Bf16) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.00390625f)), 1.0f);  // tie -> even
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.01171875f)), 1.015625f);
}

// VmRSS of this process in KiB.
long resident_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// A transient tensor (a weight's float32 copy at load) gives its memory back when freed, even
// between other live allocations: loading must not leave a resident hole per layer in the heap.
TEST(Tensor, TransientStorageGoesBackToTheSystem) {
  Tensor::transient({6 << 20});  // a 24 MiB block freed raises glibc's adaptive mmap threshold to 24 MiB
  std::vector<Tensor> copies, kept;
  for (int i = 0; i < 8; ++i) {
    copies.push_back(Tensor::transient({3 << 20}));  // 12 MiB
    std::fill(copies.back().data(), copies.back().data() + copies.back().numel(), 1.f);
    kept.push_back(Tensor::zeros({1 << 16}));  // a small allocation after it, as a packed layer
  }
  const long before = resident_kib();
  copies.clear();
  const long released_kib = before - resident_kib();
  EXPECT_GT(released_kib, 90 * 1024) << "freeing 96 MiB of copies released " << released_kib << " KiB";
}

constexpr int64_t kMiBFloats = (1 << 20) / sizeof(float);

// Freed large tensors serve the next ones, whatever their size, with their pages still mapped
// (no fresh page faulted and zeroed): a 64 MiB tensor made after a 32 MiB one was freed holds the
// freed pages in its first half (fresh pages read 0), and a 48 MiB one after that takes the freed
// 64 MiB block's place. This is what spares the VAE fresh pages at every resolution.
TEST(LargeTensors, FreedBlocksServeTensorsOfOtherSizes) {
  release_cached_memory();
  {
    Tensor freed({32 * kMiBFloats});
    std::fill(freed.data(), freed.data() + freed.numel(), 7.f);
  }
  Tensor larger({64 * kMiBFloats});
  EXPECT_EQ(larger.data()[0], 7.f);
  EXPECT_EQ(larger.data()[32 * kMiBFloats - 1], 7.f);
  EXPECT_EQ(larger.data()[32 * kMiBFloats], 0.f);  // a fresh page
  const float* freed_at = larger.data();
  larger = Tensor();
  const Tensor smaller({48 * kMiBFloats});
  EXPECT_EQ(smaller.data(), freed_at);
  release_cached_memory();
}

// Recycled blocks are never handed out twice: live tensors of mixed sizes, made while others
// are freed, each keep what was written into them.
TEST(LargeTensors, LiveTensorsNeverShareRecycledMemory) {
  release_cached_memory();
  std::mt19937 random(7);
  std::vector<Tensor> live;
  std::vector<float> written;
  for (int step = 0; step < 80; ++step) {
    if (live.size() > 8 || (!live.empty() && random() % 3 == 0)) {  // free one
      const auto at = static_cast<std::ptrdiff_t>(random() % live.size());
      live.erase(live.begin() + at);
      written.erase(written.begin() + at);
    }
    const int64_t floats = static_cast<int64_t>(random() % 33) * kMiBFloats + static_cast<int64_t>(1 + random() % 300000);
    live.push_back(Tensor({floats}));
    written.push_back(static_cast<float>(step));
    std::fill(live.back().data(), live.back().data() + floats, written.back());
    for (size_t j = 0; j < live.size(); ++j) {
      const Tensor& t = live[j];
      for (int64_t k = 0; k < t.numel(); k += 1024)
        ASSERT_EQ(t.data()[k], written[j]) << "step " << step << ": tensor " << j << ", element " << k;
      ASSERT_EQ(t.data()[t.numel() - 1], written[j]) << "step " << step << ": tensor " << j;
    }
  }
  live.clear();
  release_cached_memory();
}

// The pool holds at most 512 MiB of freed blocks, and release_cached_memory (after loading a
// model) returns all of them to the system.
TEST(LargeTensors, PoolIsBoundedAndReleasedOnRequest) {
  release_cached_memory();
  std::vector<Tensor> blocks;
  for (int i = 0; i < 5; ++i) {
    blocks.push_back(Tensor({128 * kMiBFloats}));
    std::fill(blocks.back().data(), blocks.back().data() + blocks.back().numel(), 1.f);
  }
  const long filled = resident_kib();
  blocks.clear();
  const long pooled = resident_kib();
  EXPECT_GT(filled - pooled, 100 * 1024) << "freeing 640 MiB past the 512 MiB bound released too little";
  EXPECT_LT(filled - pooled, 200 * 1024) << "the pool should keep 512 of the 640 MiB freed";
  release_cached_memory();
  EXPECT_GT(pooled - resident_kib(), 500 * 1024) << "release_cached_memory kept the pool";
}

}  // namespace lcmd
