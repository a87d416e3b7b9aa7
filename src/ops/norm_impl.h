// Private to src/ops: GroupNorm split into its statistics and its per-element affine map, so a
// convolution can normalise its input while converting it into its kernel's layout (see
// Conv2d::normalized) with exactly the arithmetic of group_norm().
#pragma once
#include <cstdint>
#include <vector>

#include "ops/ops.h"
#include "ops/vec_math_impl.h"

namespace lcmd::ops::detail {

// A GroupNorm of one input as per-sample, per-channel affine parameters:
// y = ((x - mean_hi) - mean_lo) * scale + beta, then SiLU if `silu`. Arrays are [N * C].
struct GroupNormAffine {
  int64_t channels = 0;
  bool silu = false;
  std::vector<float> mean_hi, mean_lo, scale, beta;
};

// The statistics pass of group_norm(x, args); std::invalid_argument as group_norm for a bad
// input or arguments.
GroupNormAffine group_norm_affine(const Tensor& x, const GroupNormArgs& args);

// One element of the normalisation (shared by group_norm and the fused conversions, so both
// round identically).
inline float group_normalized(float x, float mean_hi, float mean_lo, float scale, float beta) {
  return ((x - mean_hi) - mean_lo) * scale + beta;
}

}  // namespace lcmd::ops::detail
