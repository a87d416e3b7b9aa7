#include "image/postprocess.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace lcmd {

namespace {

uint8_t to_byte(float x) {
  // (x / 2 + 0.5).clamp(0, 1): torch's clamp lets NaN through; numpy's astype(uint8) of NaN
  // is undefined, so NaN is pinned to 0 here instead of leaking into the cast.
  const float unit = x / 2.0f + 0.5f;
  if (std::isnan(unit)) return 0;
  const float clamped = std::clamp(unit, 0.0f, 1.0f);
  // The default rounding mode is to-nearest-even, which is numpy.round's rule.
  return static_cast<uint8_t>(std::nearbyint(clamped * 255.0f));
}

}  // namespace

std::vector<uint8_t> to_rgb8(const Tensor& decoded_nhwc) {
  const Shape& s = decoded_nhwc.shape();
  if (s.size() != 4 || s[0] != 1 || s[3] != 3)
    throw std::invalid_argument("to_rgb8 expects a decoded image [1, H, W, 3] (NHWC), got " + shape_str(s));
  const size_t n = static_cast<size_t>(decoded_nhwc.numel());
  const float* x = decoded_nhwc.data();
  std::vector<uint8_t> rgb(n);
  for (size_t i = 0; i < n; ++i) rgb[i] = to_byte(x[i]);
  return rgb;
}

}  // namespace lcmd
