#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace lcmd
