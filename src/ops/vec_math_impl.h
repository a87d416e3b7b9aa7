// Private to src/ops: exp, sigmoid-style activations and GELU's normal CDF written as plain,
// branch-free float code, so GCC vectorises the loops that call them (glibc's expf/erff
// would make each element a library call).
//
// Accuracy, checked against double precision in tests/ops: exp_approx within 2 ulp on the
// normal float range; normal_cdf within about 5e-7 relative everywhere it is a normal float
// (the negative tail included).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace lcmd::ops::detail {

// e^(hi + lo) for a small correction |lo| << 1 that hi alone cannot hold (see normal_cdf).
// Below -87.33 (where e^x leaves the normal float range) it returns 0, above 88.37 +inf;
// NaN in gives NaN out.
inline float exp_approx_split(float hi, float lo) {
  constexpr float kLow = -87.33654f, kHigh = 88.37626f;
  // A NaN is clamped too (to kLow, by the comparisons' order), so that the integer conversion
  // below never sees it (undefined behaviour, and a sanitizer abort); it is returned at the end.
  const float xc = hi >= kLow ? (hi <= kHigh ? hi : kHigh) : kLow;
  // x = n ln2 + r with |r| <= ln2/2; adding 1.5 * 2^23 rounds x/ln2 to an integer.
  constexpr float kRoundMagic = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + kRoundMagic) - kRoundMagic;
  // ln2 split in two so that n * ln2_hi is exact (Cody-Waite reduction); lo joins r, where
  // it is not rounded away.
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  r = r + lo;
  // Taylor series of e^r to degree 7: truncation error < 6e-9 for |r| <= 0.35.
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n as float bits
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  const float result = hi > kHigh ? INFINITY : p * two_n;
  return hi < kLow ? 0.f : (hi == hi ? result : hi);
}

inline float exp_approx(float x) { return exp_approx_split(x, 0.f); }

// x * sigmoid(k x) = x / (1 + e^(-k x)).
inline float x_sigmoid(float x, float k) { return x / (1.f + exp_approx(-k * x)); }

// erfc(t) e^(t^2) for t >= 0, a smooth function falling from 1 at t = 0 like 1/(t sqrt pi).
//   t < 1:  polynomial in w = 2t - 1 (Chebyshev fit, relative error < 6e-9)
//   t >= 1: polynomial in w = (2/t - 1.1) / 0.9, i.e. 1/t in [0.1, 1] (relative error < 6e-8)
inline float erfc_scaled(float t) {
  const float wn = 2.f * t - 1.f;
  float near_zero = -5.193413471715758e-06f;
  near_zero = near_zero * wn + 2.5670886316220276e-05f;
  near_zero = near_zero * wn - 0.00010808964725583792f;
  near_zero = near_zero * wn + 0.0004779556766152382f;
  near_zero = near_zero * wn - 0.00199921359308064f;
  near_zero = near_zero * wn + 0.007761428598314524f;
  near_zero = near_zero * wn - 0.02775130234658718f;
  near_zero = near_zero * wn + 0.08983638137578964f;
  near_zero = near_zero * wn - 0.25634440779685974f;
  near_zero = near_zero * wn + 0.6156903505325317f;

  const float inv_t = 1.f / (t > 1.f ? t : 1.f);
  const float w = inv_t * (2.f / 0.9f) - (1.1f / 0.9f);
  float tail = 2.2327112674247473e-06f;
  tail = tail * w - 1.718334351608064e-05f;
  tail = tail * w + 4.1214148950530216e-05f;
  tail = tail * w - 3.121074405498803e-05f;
  tail = tail * w - 8.924866415327415e-05f;
  tail = tail * w + 0.00047206971794366837f;
  tail = tail * w - 0.0012819457333534956f;
  tail = tail * w + 0.0018442824948579073f;
  tail = tail * w + 0.003073686733841896f;
  tail = tail * w - 0.0367000587284565f;
  tail = tail * w + 0.18397535383701324f;
  tail = tail * w + 0.27629438042640686f;
  return t < 1.f ? near_zero : tail;
}

// Phi(x) = P(N(0,1) <= x) = erfc(-x / sqrt 2) / 2 = e^(-x^2/2) erfc_scaled(|x| / sqrt 2) / 2
// for x < 0, and 1 minus that for x >= 0. Nothing cancels, so the negative tail keeps its
// relative accuracy. x^2/2 is formed exactly as hi + lo: with a = |x| split into a_hi (its
// top 12 significant bits, so a_hi^2 is exact) and a_lo = a - a_hi,
// x^2 = a_hi^2 + a_lo (a + a_hi).
inline float normal_cdf(float x) {
  const float a = std::fabs(x);
  uint32_t bits;
  std::memcpy(&bits, &a, sizeof bits);
  bits &= 0xfffff000u;
  float a_hi;
  std::memcpy(&a_hi, &bits, sizeof a_hi);
  const float a_lo = a - a_hi;
  const float gauss = exp_approx_split(-0.5f * (a_hi * a_hi), -0.5f * (a_lo * (a + a_hi)));
  const float half_erfc = 0.5f * gauss * erfc_scaled(a * 0.70710678118654752f);
  return x < 0.f ? half_erfc : 1.f - half_erfc;
}

// GELU with the exact normal CDF (PyTorch's approximate="none").
inline float gelu_erf(float x) { return x * normal_cdf(x); }

}  // namespace lcmd::ops::detail
