#include "sched/torch_rng.h"

#include <cmath>
#include <numbers>

namespace lcmd {

namespace {

// torch switches from the per-element (double) path to the block path at this size.
constexpr size_t kBlock = 16;
constexpr size_t kHalfBlock = kBlock / 2;

// Box-Muller on one block of 16 uniforms, in place: (j, j+8) -> (r cos θ, r sin θ), in float.
// θ = float(2π) * u2 as torch's AVX2 kernel (the build everyone runs) forms it; its generic
// kernel rounds a double product instead. With this form the golden latents match to 3.6e-7
// (83% bit-identical) instead of 1.8e-6; the rest is libm vs avx_mathfun log/sincos.
void box_muller_block(float* d) {
  for (size_t j = 0; j < kHalfBlock; ++j) {
    const float u1 = 1.0f - d[j];  // [0, 1) -> (0, 1] so the log is finite
    const float u2 = d[j + kHalfBlock];
    const float radius = std::sqrt(-2.0f * std::log(u1));
    const float theta = static_cast<float>(2.0 * std::numbers::pi) * u2;
    d[j] = radius * std::cos(theta);
    d[j + kHalfBlock] = radius * std::sin(theta);
  }
}

}  // namespace

TorchGenerator::TorchGenerator(uint64_t seed)
    : seed_(seed), engine_(static_cast<std::mt19937::result_type>(seed & 0xFFFFFFFFu)) {}

float TorchGenerator::next_uniform_float() {
  const uint32_t bits = static_cast<uint32_t>(engine_()) & 0xFFFFFFu;
  return static_cast<float>(bits) * 0x1p-24f;
}

double TorchGenerator::next_uniform_double() {
  const uint64_t hi = static_cast<uint32_t>(engine_());
  const uint64_t lo = static_cast<uint32_t>(engine_());
  const uint64_t bits = ((hi << 32) | lo) & ((uint64_t{1} << 53) - 1);
  return static_cast<double>(bits) * 0x1p-53;
}

double TorchGenerator::next_normal_double() {
  if (cached_normal_) {
    const double value = *cached_normal_;
    cached_normal_.reset();
    return value;
  }
  const double u1 = next_uniform_double();
  const double u2 = next_uniform_double();
  const double radius = std::sqrt(-2.0 * std::log(1.0 - u2));
  const double theta = 2.0 * std::numbers::pi * u1;
  cached_normal_ = radius * std::sin(theta);
  return radius * std::cos(theta);
}

void TorchGenerator::fill_normal_vectorized(float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = next_uniform_float();
  for (size_t i = 0; i + kBlock <= n; i += kBlock) box_muller_block(out + i);
  if (n % kBlock != 0) {
    // torch redoes the last (overlapping) block from fresh uniforms.
    float* tail = out + n - kBlock;
    for (size_t i = 0; i < kBlock; ++i) tail[i] = next_uniform_float();
    box_muller_block(tail);
  }
}

void TorchGenerator::randn(float* out, size_t n) {
  if (n >= kBlock) {
    fill_normal_vectorized(out, n);
    return;
  }
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(next_normal_double());
}

Tensor TorchGenerator::randn(const Shape& shape) {
  Tensor t(shape);
  randn(t.data(), static_cast<size_t>(t.numel()));
  return t;
}

}  // namespace lcmd
