#include "sched/embeddings.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace lcmd {

namespace {

// torch's CPU exp of a float tensor runs SLEEF's expf_u10 on full vectors (blocks of 16 in
// the AVX2 build) and libm's expf on the rest. The two differ by an ulp on ~10% of inputs,
// and that ulp matters here (see the header), so this is SLEEF's algorithm in scalar form:
// Cody-Waite reduction by ln 2 in two parts, a degree-6 polynomial with fused multiply-adds,
// and a scaling by 2^q in two halves.
float torch_vectorized_expf(float d) {
  if (std::isnan(d)) return d;
  if (d < -104.0f) return 0.0f;
  if (d > 100.0f) return HUGE_VALF;
  constexpr float kInvLn2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187045e-06f;
  const int q = static_cast<int>(std::nearbyint(d * kInvLn2));
  const float qf = static_cast<float>(q);
  float s = std::fma(qf, -kLn2Hi, d);
  s = std::fma(qf, -kLn2Lo, s);
  float u = 0.000198527617612853646278381f;
  u = std::fma(u, s, 0.00139304355252534151077271f);
  u = std::fma(u, s, 0.00833336077630519866943359f);
  u = std::fma(u, s, 0.0416664853692054748535156f);
  u = std::fma(u, s, 0.166666671633720397949219f);
  u = std::fma(u, s, 0.5f);
  u = 1.0f + std::fma(s * s, u, s);
  return u * std::ldexp(1.0f, q >> 1) * std::ldexp(1.0f, q - (q >> 1));
}

// exp over a 1-D float tensor of `count` elements, element i, as torch's AVX2 kernel splits it.
float torch_expf(float x, int i, int count) {
  constexpr int kVectorBlock = 16;  // two AVX2 vectors per loop iteration
  return i < count / kVectorBlock * kVectorBlock ? torch_vectorized_expf(x) : std::exp(x);
}

// [sin(x), cos(x)] or [cos(x), sin(x)] over the arguments, zero-padded to dim.
std::vector<float> sin_cos_halves(const std::vector<float>& args, int dim, bool cos_first) {
  const size_t half = args.size();
  std::vector<float> emb(static_cast<size_t>(dim), 0.0f);
  for (size_t i = 0; i < half; ++i) {
    const float s = std::sin(args[i]), c = std::cos(args[i]);
    emb[i] = cos_first ? c : s;
    emb[half + i] = cos_first ? s : c;
  }
  return emb;
}

}  // namespace

std::vector<float> guidance_scale_embedding(double guidance_scale, int dim) {
  if (dim < 4)
    throw std::invalid_argument("guidance embedding dim must be >= 4, got " + std::to_string(dim));
  // The pipeline does torch.tensor(guidance_scale - 1) (Python double -> float32), then * 1000.
  const float w = static_cast<float>(guidance_scale - 1.0) * 1000.0f;
  const int half = dim / 2;
  // torch.log(torch.tensor(10000.0)) / (half - 1), a float32 0-dim tensor.
  const float step = std::log(10000.0f) / static_cast<float>(half - 1);
  std::vector<float> args(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float freq = torch_expf(static_cast<float>(i) * -step, i, half);
    args[static_cast<size_t>(i)] = w * freq;
  }
  return sin_cos_halves(args, dim, /*cos_first=*/false);
}

std::vector<float> timestep_embedding(int timestep, int dim, bool flip_sin_to_cos, float freq_shift) {
  if (dim < 2) throw std::invalid_argument("timestep embedding dim must be >= 2, got " + std::to_string(dim));
  const int half = dim / 2;
  // -math.log(10000) is a Python double; torch rounds it to float before the multiply.
  const float neg_log_period = static_cast<float>(-std::log(10000.0));
  const float divisor = static_cast<float>(static_cast<double>(half) - static_cast<double>(freq_shift));
  const float t = static_cast<float>(timestep);
  std::vector<float> args(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float exponent = neg_log_period * static_cast<float>(i) / divisor;
    args[static_cast<size_t>(i)] = t * torch_expf(exponent, i, half);
  }
  return sin_cos_halves(args, dim, flip_sin_to_cos);
}

}  // namespace lcmd
