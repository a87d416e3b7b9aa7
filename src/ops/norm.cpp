// GroupNorm and LayerNorm over channels-last data. Statistics are accumulated in double, with
// each group's values taken relative to one of its own elements, so E[x^2] - E[x]^2 does not
// cancel even when the mean is far from zero; the result is within about 1 ulp of float of
// the exactly normalised value.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/norm_impl.h"
#include "ops/ops.h"
#include "ops/parallel_impl.h"
#include "ops/vec_math_impl.h"

namespace lcmd::ops {

namespace {

// A double mean split into two floats, so x - mean can be formed in float without losing
// the low bits of the mean: (x - hi) - lo.
struct SplitMean {
  float hi, lo;
  explicit SplitMean(double mean) : hi(static_cast<float>(mean)), lo(static_cast<float>(mean - hi)) {}
};

// sum[c] += x - shift[c] and sumsq[c] += (x - shift[c])^2 over `rows` rows of `channels`.
LCMD_VECTOR_CLONES
void accumulate_channel_moments(const float* x, int64_t rows, int64_t channels, const float* shift, double* sum,
                                double* sumsq) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const double d = static_cast<double>(row[c]) - static_cast<double>(shift[c]);
      sum[c] += d;
      sumsq[c] += d * d;
    }
  }
}

// y = ((x - mean_hi) - mean_lo) * scale + beta per channel, optionally followed by SiLU.
LCMD_VECTOR_CLONES
void normalize_rows(const float* x, float* y, int64_t rows, int64_t channels, const float* mean_hi,
                    const float* mean_lo, const float* scale, const float* beta, bool silu) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * channels;
    float* out = y + r * channels;
    if (silu) {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c)
        out[c] = detail::x_sigmoid(detail::group_normalized(in[c], mean_hi[c], mean_lo[c], scale[c], beta[c]), 1.f);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c)
        out[c] = detail::group_normalized(in[c], mean_hi[c], mean_lo[c], scale[c], beta[c]);
    }
  }
}

// Mean and 1/sqrt(var + eps) of one row, two passes in double.
LCMD_VECTOR_CLONES
void layer_norm_row(const float* x, float* y, int64_t channels, float eps, const float* gamma, const float* beta) {
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < channels; ++c) sum += x[c];
  const double mean = sum / static_cast<double>(channels);
  double sumsq = 0;
#pragma omp simd reduction(+ : sumsq)
  for (int64_t c = 0; c < channels; ++c) {
    const double d = x[c] - mean;
    sumsq += d * d;
  }
  const float rstd = static_cast<float>(1.0 / std::sqrt(sumsq / static_cast<double>(channels) + eps));
  const SplitMean m(mean);
  if (gamma && beta) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) y[c] = ((x[c] - m.hi) - m.lo) * rstd * gamma[c] + beta[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const float v = ((x[c] - m.hi) - m.lo) * rstd;
      y[c] = (gamma ? v * gamma[c] : v) + (beta ? beta[c] : 0.f);
    }
  }
}

void check_channels_last(const Tensor& x, int min_rank, const char* layout, const char* op) {
  if (x.rank() < min_rank || x.dim(-1) <= 0)
    throw std::invalid_argument(std::string(op) + ": input " + shape_str(x.shape()) + " must be " + layout +
                                " with C > 0");
}

}  // namespace

namespace detail {

GroupNormAffine group_norm_affine(const Tensor& x, const GroupNormArgs& args) {
  check_channels_last(x, 2, "channels-last [N, ..., C]", "group_norm");
  const int64_t channels = x.dim(-1), batch = x.dim(0);
  const int groups = args.groups;
  if (groups <= 0 || channels % groups != 0)
    throw std::invalid_argument("group_norm: " + std::to_string(channels) + " channels of " + shape_str(x.shape()) +
                                " cannot be split into " + std::to_string(groups) + " groups");
  if (!(args.eps >= 0)) throw std::invalid_argument("group_norm: eps must be >= 0, got " + std::to_string(args.eps));
  GroupNormAffine a;
  a.channels = channels;
  a.silu = args.silu;
  if (x.numel() == 0) return a;
  const int64_t positions = x.numel() / (batch * channels), group_size = channels / groups;
  const int64_t rows = batch * positions;
  const float* in = x.data();

  // Shift every group by its first element (position 0) before summing.
  std::vector<float> shift(batch * channels);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c) shift[n * channels + c] = in[n * positions * channels + c / group_size * group_size];

  // Per-slice, per-sample, per-channel moments.
  const int slices = threads_for(rows * channels, kElementwiseGrain);
  std::vector<double> sums(static_cast<size_t>(slices) * batch * channels * 2, 0.0);
  parallel_slices(rows, slices, [&](int slice, int64_t begin, int64_t end) {
    double* sum = sums.data() + static_cast<size_t>(slice) * batch * channels * 2;
    double* sumsq = sum + batch * channels;
    for (int64_t r = begin; r < end;) {
      const int64_t n = r / positions, sample_end = std::min(end, (n + 1) * positions);
      accumulate_channel_moments(in + r * channels, sample_end - r, channels, shift.data() + n * channels,
                                 sum + n * channels, sumsq + n * channels);
      r = sample_end;
    }
  });

  // Group statistics -> per-channel affine parameters (N * C values: negligible work).
  for (auto* v : {&a.mean_hi, &a.mean_lo, &a.scale, &a.beta}) v->resize(batch * channels);
  const double count = static_cast<double>(positions * group_size);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t g = 0; g < groups; ++g) {
      double sum = 0, sumsq = 0;
      for (int s = 0; s < slices; ++s) {
        const double* part = sums.data() + static_cast<size_t>(s) * batch * channels * 2;
        for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) {
          sum += part[n * channels + c];
          sumsq += part[batch * channels + n * channels + c];
        }
      }
      const double shifted_mean = sum / count;
      const double var = std::max(0.0, sumsq / count - shifted_mean * shifted_mean);
      const double rstd = 1.0 / std::sqrt(var + args.eps);
      const SplitMean mean(shift[n * channels + g * group_size] + shifted_mean);
      for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) {
        const int64_t i = n * channels + c;
        a.mean_hi[i] = mean.hi;
        a.mean_lo[i] = mean.lo;
        a.scale[i] = static_cast<float>(rstd * (args.gamma ? args.gamma[c] : 1.0));
        a.beta[i] = args.beta ? args.beta[c] : 0.f;
      }
    }
  return a;
}

}  // namespace detail

Tensor group_norm(const Tensor& x, int groups, float eps, const float* gamma, const float* beta, bool silu) {
  const detail::GroupNormAffine a = detail::group_norm_affine(x, {groups, eps, gamma, beta, silu});
  Tensor y(x.shape());
  if (x.numel() == 0) return y;
  const int64_t channels = a.channels, positions = x.numel() / (x.dim(0) * channels), rows = x.dim(0) * positions;
  // The statistics' slices, so cache-resident tensors are read from the same core.
  const int slices = detail::threads_for(rows * channels, detail::kElementwiseGrain);
  detail::parallel_slices(rows, slices, [&](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end;) {
      const int64_t n = r / positions, sample_end = std::min(end, (n + 1) * positions), at = n * channels;
      normalize_rows(x.data() + r * channels, y.data() + r * channels, sample_end - r, channels, a.mean_hi.data() + at,
                     a.mean_lo.data() + at, a.scale.data() + at, a.beta.data() + at, silu);
      r = sample_end;
    }
  });
  return y;
}

Tensor layer_norm(const Tensor& x, float eps, const float* gamma, const float* beta) {
  check_channels_last(x, 1, "[..., C]", "layer_norm");
  if (!(eps >= 0)) throw std::invalid_argument("layer_norm: eps must be >= 0, got " + std::to_string(eps));
  const int64_t channels = x.dim(-1), rows = x.numel() / channels;
  Tensor y(x.shape());
  detail::parallel_range(rows, std::max<int64_t>(1, detail::kElementwiseGrain / channels), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) layer_norm_row(x.data() + r * channels, y.data() + r * channels, channels, eps, gamma, beta);
  });
  return y;
}

}  // namespace lcmd::ops
