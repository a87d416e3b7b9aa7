// Seeded Gaussian noise that reproduces torch's CPU generator, so a seed gives the same
// initial latents and step noise as diffusers with `torch.Generator("cpu").manual_seed(seed)`.
//
// What torch does (read from ATen's CPUGeneratorImpl, MT19937RNGEngine.h and the CPU
// normal kernel, torch 1.13):
//   - manual_seed(s) seeds a standard MT19937 with init_genrand(s mod 2^32) and clears the
//     cached Box-Muller value. Only the low 32 bits of a 64-bit seed matter.
//   - randn of n >= 16 float32 values: n uniforms (u32 & 0xFFFFFF) * 2^-24 are drawn first,
//     then Box-Muller runs on blocks of 16 (pairs j, j+8). When n % 16 != 0 the last 16
//     outputs are redone from 16 fresh uniforms. This path uses float math.
//   - randn of n < 16 values: one double normal per element from 53-bit uniforms (two u32
//     draws each); Box-Muller makes two values and the second is cached in the generator
//     for the next scalar draw.
// torch's AVX2 build uses polynomial log/sincos approximations; the libm functions used here
// match it to 3.6e-7 absolute on the golden latents (the bound is 2e-6).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>

#include "core/tensor.h"

namespace lcmd {

class TorchGenerator {  // torch.Generator("cpu").manual_seed(seed)
 public:
  explicit TorchGenerator(uint64_t seed);

  // torch.randn(n, generator=this) in float32; the stream continues across calls.
  void randn(float* out, size_t n);
  // torch.randn(shape, generator=this): values in C order of `shape`. Pass the PyTorch
  // (NCHW) shape and convert with to_nhwc if the caller works channels-last.
  Tensor randn(const Shape& shape);

  uint64_t initial_seed() const { return seed_; }

 private:
  float next_uniform_float();    // [0, 1) with 24 random bits
  double next_uniform_double();  // [0, 1) with 53 random bits
  double next_normal_double();   // scalar Box-Muller with the cached second value
  void fill_normal_vectorized(float* out, size_t n);

  uint64_t seed_;
  std::mt19937 engine_;  // the standard MT19937 is the same engine as torch's at::mt19937
  std::optional<double> cached_normal_;
};

}  // namespace lcmd
