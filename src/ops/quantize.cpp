// Int8 quantization of weights and activations, and the oneDNN attributes of int8 primitives
// (see quantize_impl.h for the scheme).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "ops/dnnl_impl.h"
#include "ops/parallel_impl.h"
#include "ops/quantize_impl.h"

namespace lcmd::ops::detail {

using dt = dnnl::memory::data_type;

namespace {

// Adding and subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 to the nearest integer,
// ties to even, in the default rounding mode. Unlike std::nearbyint this vectorises at every
// ISA level of the clones.
constexpr float kRoundingMagic = 12582912.f;

// Range of x, both NaN if an element is NaN or infinite (x * 0 is NaN exactly for those).
LCMD_VECTOR_CLONES
Range range_kernel(const float* x, int64_t n) {
  float lo = 0.f, hi = 0.f, poison = 0.f;  // 0 is always in the range
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(+ : poison)
  for (int64_t i = 0; i < n; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
    poison += x[i] * 0.f;
  }
  return Range{lo + poison, hi + poison};
}

// float32 -> bfloat16, rounding to nearest even (what oneDNN's reorder and vcvtneps2bf16 do);
// NaN stays a quiet NaN. Written as integer arithmetic so every clone vectorises it.
LCMD_VECTOR_CLONES
void bf16_kernel(const float* x, uint16_t* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    y[i] = static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
  }
}

// True when `to` is `from` with another data type: same dims, dense, same order, no inner
// blocks (a matmul's `ab` or a direct convolution's NHWC source), so converting is elementwise.
bool same_plain_layout(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  const dnnl_memory_desc_t &a = from.data, &b = to.data;
  if (a.ndims != b.ndims || a.format_kind != dnnl_blocked || b.format_kind != dnnl_blocked) return false;
  if (a.format_desc.blocking.inner_nblks != 0 || b.format_desc.blocking.inner_nblks != 0) return false;
  if (a.offset0 != 0 || b.offset0 != 0) return false;
  for (int d = 0; d < a.ndims; ++d)
    if (a.dims[d] != b.dims[d] || a.padded_dims[d] != a.dims[d] || b.padded_dims[d] != b.dims[d] ||
        a.format_desc.blocking.strides[d] != b.format_desc.blocking.strides[d])
      return false;
  return from.get_size() == to.get_size() * 2;  // dense f32 and dense bf16
}

// max |x_i| (for weights, serial).
float absolute_max(const float* x, int64_t n) {
  float m = 0.f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// q = round(x * inv_scale) + zero_point, clamped to [lo, hi], for finite x (ties to even). The
// clamp is on the integers, which vectorises where a float clamp does not, and the int32 -> Q
// narrowing is a second loop over a small block: in one loop GCC sizes the vectors for the bytes
// and computes the floats 4 at a time (1.7x slower).
// (Symmetric: zero_point unused and not added, so the rounding is exactly that of x * inv_scale.)
template <class Q>
[[gnu::always_inline]] inline void quantize_block(const float* x, int64_t n, float inv_scale, float zero_point,
                                                  int32_t lo, int32_t hi, Q* q) {
  constexpr bool kSymmetric = std::is_same_v<Q, int8_t>;
  constexpr int64_t kBlock = 256;
  int32_t rounded[kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t count = std::min(kBlock, n - start);
    const float* xs = x + start;
#pragma omp simd
    for (int64_t i = 0; i < count; ++i)
      rounded[i] = std::clamp(static_cast<int32_t>(kSymmetric ? (xs[i] * inv_scale + kRoundingMagic) - kRoundingMagic
                                                              : (xs[i] * inv_scale + zero_point + kRoundingMagic) - kRoundingMagic),
                              lo, hi);
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) q[start + i] = static_cast<Q>(rounded[i]);
  }
}

// Asymmetric u8: the levels [0, 255] around zero_point.
LCMD_VECTOR_CLONES
void quantize_kernel(const float* x, int64_t n, float inv_scale, float zero_point, uint8_t* q) {
  quantize_block(x, n, inv_scale, zero_point, 0, 255, q);
}

// Symmetric s8: [-127, 127], no zero point.
LCMD_VECTOR_CLONES
void symmetric_kernel(const float* x, int64_t n, float inv_scale, int8_t* q) {
  quantize_block(x, n, inv_scale, 0.f, -127, 127, q);
}

// Elements per thread below which a quantization pass is not worth splitting.
constexpr int64_t kQuantizeGrain = 32768;

}  // namespace

dnnl::memory::data_type source_type(Precision precision) {
  switch (precision) {
    case Precision::FP32: return dt::f32;
    case Precision::BF16: return dt::bf16;
    case Precision::INT8: return dt::u8;
  }
  return dt::f32;
}

dnnl::memory::data_type weights_type(Precision precision) {
  return precision == Precision::INT8 ? dt::s8 : source_type(precision);
}

Int8Weights quantize_per_channel(const float* weights, int64_t channels, int64_t per_channel) {
  Int8Weights result{std::vector<int8_t>(static_cast<size_t>(channels * per_channel)),
                     std::vector<float>(static_cast<size_t>(channels))};
  std::atomic<int64_t> bad_channel{-1};  // set inside the parallel region, thrown after it
  parallel_range(channels, std::max<int64_t>(1, kQuantizeGrain / per_channel), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float* w = weights + c * per_channel;
      const float max = absolute_max(w, per_channel);
      if (!std::isfinite(max) || std::isnan(std::accumulate(w, w + per_channel, 0.f))) {
        bad_channel = c;
        continue;
      }
      const float scale = max > 0.f ? max / kInt8Max : 1.f;
      result.scales[c] = scale;
      for (int64_t i = 0; i < per_channel; ++i)
        result.values[c * per_channel + i] = static_cast<int8_t>(std::clamp(std::nearbyint(w[i] / scale), -kInt8Max, kInt8Max));
    }
  });
  if (bad_channel >= 0)
    throw std::invalid_argument("int8 quantization: output channel " + std::to_string(bad_channel.load()) +
                                " has a NaN or infinite weight");
  return result;
}

Range value_range(const float* x, int64_t n) {
  const int slices = threads_for(n, kQuantizeGrain);
  std::vector<Range> partial(static_cast<size_t>(std::max(slices, 1)), Range{0.f, 0.f});
  parallel_slices(n, slices, [&](int s, int64_t begin, int64_t end) { partial[s] = range_kernel(x + begin, end - begin); });
  Range range{0.f, 0.f};
  for (const Range& r : partial) {
    if (std::isnan(r.min)) return r;  // std::min / max would drop the NaN
    range = Range{std::min(range.min, r.min), std::max(range.max, r.max)};
  }
  return range;
}

namespace {

// The quantization of values in `range` (0 in it): its 255 levels spread over the range. Empty
// when there is nothing to spread: all values zero (scale 1) or a NaN / infinite one (scale
// NaN, so the layer's output becomes NaN, as in fp32); every q is then 0.
struct Levels {
  ActivationQuantization quantization;
  float inv_scale;
};
std::optional<Levels> levels_for(Range range, ActivationQuantization* degenerate) {
  constexpr float kLevels = 255.f;
  if (std::isnan(range.min) || range.max == range.min) {
    *degenerate = ActivationQuantization{std::isnan(range.min) ? range.min : 1.f, 0};
    return std::nullopt;
  }
  const float inv_scale = kLevels / (range.max - range.min);
  return Levels{{(range.max - range.min) / kLevels, static_cast<int32_t>(std::nearbyint(-range.min * inv_scale))},
                inv_scale};
}

}  // namespace

void quantize_symmetric(const float* x, int64_t n, float inv_scale, int8_t* q) { symmetric_kernel(x, n, inv_scale, q); }

ActivationQuantization quantize_activations(const float* x, int64_t n, uint8_t* q) {
  ActivationQuantization degenerate;
  const std::optional<Levels> levels = levels_for(value_range(x, n), &degenerate);
  if (!levels) {
    std::memset(q, 0, static_cast<size_t>(n));
    return degenerate;
  }
  const auto zero_point = static_cast<float>(levels->quantization.zero_point);
  parallel_range(n, kQuantizeGrain, [&](int64_t begin, int64_t end) {
    quantize_kernel(x + begin, end - begin, levels->inv_scale, zero_point, q + begin);
  });
  return levels->quantization;
}

ActivationQuantization quantize_activations_padded(const float* x, const PaddedMap& map, uint8_t* q) {
  const int64_t row = map.width * map.channels, padded_row = map.padded_width() * map.channels;
  const int64_t rows = map.batch * map.height, grain = std::max<int64_t>(1, kQuantizeGrain / row);
  // Row y of an image, made into the calling thread's scratch if the map is not stored.
  auto row_of = [&](int64_t r) -> const float* {
    if (!map.make_row) return x + r * row;
    auto* scratch = static_cast<float*>(thread_buffer(ThreadBuffer::kBlockedSource, sizeof(float) * row));
    map.make_row(r / map.height, r % map.height, scratch);
    return scratch;
  };
  if (map.make_row && !map.range) throw std::logic_error("quantize_activations_padded: made rows need their range");
  ActivationQuantization degenerate;
  const std::optional<Levels> levels = levels_for(map.range ? *map.range : value_range(x, rows * row), &degenerate);
  if (!levels) {
    std::memset(q, 0, static_cast<size_t>(map.padded_elements()));
    return degenerate;
  }
  const int32_t zero_point = levels->quantization.zero_point;
  const int64_t side = map.padding * map.channels, padded_rows = map.batch * map.padded_height();
  const auto fill = static_cast<uint8_t>(zero_point);
  parallel_range(padded_rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / map.padded_height(), y = r % map.padded_height() - map.padding;
      uint8_t* out = q + r * padded_row;
      if (y < 0 || y >= map.height) {
        std::memset(out, fill, static_cast<size_t>(padded_row));
        continue;
      }
      std::memset(out, fill, static_cast<size_t>(side));
      quantize_kernel(row_of(image * map.height + y), row, levels->inv_scale, static_cast<float>(zero_point),
                      out + side);
      std::memset(out + side + row, fill, static_cast<size_t>(side));
    }
  });
  return levels->quantization;
}

std::vector<int32_t> weight_sums(const Int8Weights& weights) {
  const size_t channels = weights.scales.size(), per_channel = weights.values.size() / channels;
  std::vector<int32_t> sums(channels, 0);
  for (size_t c = 0; c < channels; ++c)
    for (size_t i = 0; i < per_channel; ++i) sums[c] += weights.values[c * per_channel + i];
  return sums;
}

dnnl::memory::desc int8_scale_desc(int ndims) {
  return dnnl::memory::desc(dnnl::memory::dims(static_cast<size_t>(ndims), 1), dt::f32,
                            ndims == 2 ? dnnl::memory::format_tag::ab : dnnl::memory::format_tag::abcd);
}

dnnl::primitive_attr int8_attributes(const std::vector<float>& weight_scales, int channel_dim, int ndims,
                                     bool residual, bool source_zero_point) {
  dnnl::primitive_attr attr = user_scratchpad_attr();
  if (source_zero_point) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
  attr.set_output_scales(1 << channel_dim, weight_scales);
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, int8_scale_desc(ndims));
  if (residual) ops.append_sum(1.f);  // dst holds the residual on entry
  attr.set_post_ops(ops);
  return attr;
}

std::vector<float> int8_bias(const float* bias, const std::vector<float>& weight_scales, float activation_scale) {
  std::vector<float> result(weight_scales.size());
  for (size_t c = 0; c < result.size(); ++c) result[c] = bias[c] / (activation_scale * weight_scales[c]);
  return result;
}

void convert_to_bf16(const float* x, uint16_t* y, int64_t n) {
  parallel_range(n, kElementwiseGrain, [&](int64_t begin, int64_t end) { bf16_kernel(x + begin, y + begin, end - begin); });
}

Int8Weights quantize_weights(const dnnl::memory& given, const dnnl::memory::dims& dims, dnnl::memory::format_tag plain,
                             int64_t channels) {
  int64_t total = 1;
  for (const int64_t d : dims) total *= d;
  if (given.get_desc() == dnnl::memory::desc(dims, dt::f32, plain))
    return quantize_per_channel(static_cast<const float*>(given.get_data_handle()), channels, total / channels);
  const std::vector<float> values = to_plain_f32(given, dims, plain);
  return quantize_per_channel(values.data(), channels, total / channels);
}

SourceArguments::SourceArguments(Precision precision, const float* x, int64_t elements,
                                 const dnnl::memory::desc& source_desc, const ReorderStep* convert,
                                 const dnnl::memory& bias, const Int8Scaling* int8, const PaddedMap* padded)
    : bias_(bias) {
  switch (precision) {
    case Precision::FP32:
      source_ = wrap_memory(source_desc, x);
      return;
    case Precision::BF16: {
      void* converted = thread_buffer(ThreadBuffer::kConvertedSource, source_desc.get_size());
      source_ = wrap_memory(source_desc, converted);
      if (same_plain_layout(convert->pd.src_desc(), source_desc)) {
        // oneDNN's reorder costs ~0.15 ms per call on the UNet's small activations (~30 ms of
        // every step); this loop does the same rounding in a fraction of that.
        convert_to_bf16(x, static_cast<uint16_t*>(converted), elements);
        return;
      }
      const dnnl::memory from = wrap_memory(convert->pd.src_desc(), x);
      run_primitive(convert->primitive, convert->pd, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, source_}});
      return;
    }
    case Precision::INT8: {
      const int64_t stored = padded ? padded->padded_elements() : elements;
      auto* quantized = static_cast<uint8_t*>(thread_buffer(ThreadBuffer::kConvertedSource, stored));
      quantization_ = padded ? quantize_activations_padded(x, *padded, quantized)
                             : quantize_activations(x, elements, quantized);
      source_ = wrap_memory(source_desc, quantized);
      scale_ = wrap_memory(int8_scale_desc(source_desc.data.ndims), &quantization_.scale);
      if (!padded) zero_point_ = wrap_memory({{1}, dt::s32, dnnl::memory::format_tag::x}, &quantization_.zero_point);
      if (!int8->bias.empty()) int8_bias_ = int8_bias(int8->bias.data(), int8->weight_scales, quantization_.scale);
      if (padded) {
        if (!bias || int8->weight_sums.size() != int8->weight_scales.size())
          throw std::logic_error("SourceArguments: an int8 convolution needs a bias and its weight sums");
        int8_bias_.resize(int8->weight_scales.size(), 0.f);
        for (size_t c = 0; c < int8_bias_.size(); ++c)
          int8_bias_[c] -= static_cast<float>(quantization_.zero_point) * static_cast<float>(int8->weight_sums[c]);
      }
      if (!int8_bias_.empty()) bias_ = wrap_memory(bias.get_desc(), int8_bias_.data());
      return;
    }
  }
}

void SourceArguments::add_to(std::unordered_map<int, dnnl::memory>& args) const {
  args[DNNL_ARG_SRC] = source_;
  if (bias_) args[DNNL_ARG_BIAS] = bias_;
  if (scale_) args[kInt8ScaleArg] = scale_;
  if (zero_point_) args[kInt8ZeroPointArg] = zero_point_;
}

}  // namespace lcmd::ops::detail
