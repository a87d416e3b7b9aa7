// The pipeline's last step: decoded VAE output in [-1, 1] to 8-bit RGB, exactly as diffusers
// (VaeImageProcessor.postprocess + numpy_to_pil) does it.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lcmd {

// decoded: NHWC [1, H, W, 3] float. Per value: clamp(x / 2 + 0.5, 0, 1) in float32, then
// x * 255 in float32 rounded half to even (numpy's round), to uint8. Returns H*W*3 bytes, RGB
// interleaved, rows top to bottom. NaN maps to 0. Throws std::invalid_argument on another shape.
std::vector<uint8_t> to_rgb8(const Tensor& decoded_nhwc);

}  // namespace lcmd
