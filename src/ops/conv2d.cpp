// 2-D convolution on oneDNN. Weights are packed once; each input shape gets its own plan
// (primitive + how to feed it), cached. A 1x1 stride-1 convolution over NHWC is a matrix
// product over pixels, so it runs as a Linear (brgemm matmul keeps one packed layout for every
// pixel count, while brgconv_1x1 changes layout with the spatial size).
//
// Algorithms (measured on a 2-core Zen 4, see ../shared/notes/compute-probe.md and
// bench/ops_bench.cpp):
//  - direct: brgconv on NHWC activations, in f32, bf16 or int8;
//  - Winograd F(4x4, 3x3), f32 only: 2-3x faster on 3x3 stride-1 layers from ~256 output pixels
//    up. oneDNN's Winograd takes nChw16c activations, so the input and output are re-laid out
//    around it here (a few % of its time), and its weights stay in OIhw16i16o, transformed per
//    call: the pre-transformed copy oneDNN can keep instead is 4x the weights' size (an SD1.5
//    UNet in f32 would grow by GBs). Direct convolution on NHWC runs on OIhw16i16o weights too
//    (jit:avx512_core: as fast as brgconv on the SD shapes measured, except 13 % slower at
//    1280->1280@8x8), so such a layer keeps one copy for both.
//    Large Winograd convolutions run in horizontal bands of output rows (conv_banding_impl.h):
//    its scratchpad (the transformed input and output tiles) and the blocked copies would
//    otherwise take ~7 bytes per output pixel and channel for the whole image at once.
//  - Winograd F(2x2, 3x3) with bf16 or int8 products (winograd_impl.h), for models that opt in
//    (Conv3x3Algorithm::kWinograd: SD's VAE decoder): hand-written transforms on NHWC around a
//    batched oneDNN bf16 or s8 matmul, 1.3-1.8x direct bf16 from 16x16 outputs up, 1.1-1.5x
//    direct int8.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/conv_banding_impl.h"
#include "ops/norm_impl.h"
#include "ops/dnnl_impl.h"
#include "ops/ops.h"
#include "ops/parallel_impl.h"
#include "ops/quantize_impl.h"
#include "ops/winograd_impl.h"
#include "ops/work_counter.h"

namespace lcmd::ops {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {

// The input size the packed weights layout is chosen for: the UNet's size at 256x256 and the
// VAE's first. Most other sizes run on the same layout; where the fast kernel wants another
// (oneDNN 2.6 on Zen 4: f32 512/640 channels at 4x4, bf16 256 channels up to 8x8 and 320 from
// 64x64, int8 up to 640 channels up to 16x16), create_direct_plan gives that plan its own copy.
constexpr int64_t kPackingSize = 32;

// Winograd (weights transformed per call) beats direct from about this many output pixels
// (batch x height x width): at 16x16 by 1.15-1.25x, at 32x32 by 2x; at 8x8 the weight
// transform makes it 2.7x slower. The choice is a fixed rule rather than a timing, so a given
// shape always takes the same path and results are reproducible from run to run.
constexpr int64_t kWinogradMinPixels = 256;

// oneDNN's Winograd and blocked layouts work on channel blocks of 16.
constexpr int64_t kChannelBlock = 16;

enum class ConvAlgorithm { kDirect, kWinograd };

struct PlanKey {
  int64_t batch, height, width;
  bool residual;
  int threads;  // oneDNN partitions the work for the thread count at creation
  auto operator<=>(const PlanKey&) const = default;
};

// One band of a Winograd plan: output rows [out_begin, out_end) from input rows
// [in_begin, in_end) of every image, on a primitive made for that band's height and padding.
struct WinogradBand {
  int64_t out_begin, out_end, in_begin, in_end;
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward primitive;
};

struct ConvPlan {
  ConvAlgorithm algorithm;
  dnnl::convolution_forward::primitive_desc pd;  // direct: the primitive's; Winograd: the first band's
  dnnl::convolution_forward primitive;
  memory weights;                              // the shared packed weights, or a private re-layout
  std::optional<detail::ReorderStep> to_bf16;  // BF16: the f32 -> bf16 source conversion
  std::vector<WinogradBand> bands;             // Winograd only, top to bottom
};

// Pixels per task of the layout conversions: 64 pixels of up to 1280 channels stay in L2.
constexpr int64_t kPixelTile = 64;

// NHWC <-> nChw16c for the pixels [begin, end) of one image with `pixels` pixels. On the way
// back, a residual (NHWC, or null) is added.
LCMD_VECTOR_CLONES
void nhwc_to_blocked(const float* nhwc, float* blocked, int64_t channels, int64_t pixels, int64_t begin, int64_t end) {
  for (int64_t b = 0; b < channels / kChannelBlock; ++b)
    for (int64_t p = begin; p < end; ++p) {
      const float* from = nhwc + p * channels + b * kChannelBlock;
      float* to = blocked + (b * pixels + p) * kChannelBlock;
#pragma omp simd
      for (int64_t i = 0; i < kChannelBlock; ++i) to[i] = from[i];
    }
}

// Pixel by pixel, so each pixel's NHWC row is written whole and in order (block by block
// instead wrote one cache line per pixel and pass: ~1.8x the time, on maps far larger than the
// caches).
LCMD_VECTOR_CLONES
void blocked_to_nhwc(const float* blocked, const float* residual, float* nhwc, int64_t channels, int64_t pixels,
                     int64_t begin, int64_t end) {
  for (int64_t p = begin; p < end; ++p)
    for (int64_t b = 0; b < channels / kChannelBlock; ++b) {
      const int64_t offset = p * channels + b * kChannelBlock;
      const float* from = blocked + (b * pixels + p) * kChannelBlock;
      if (residual) {
#pragma omp simd
        for (int64_t i = 0; i < kChannelBlock; ++i) nhwc[offset + i] = from[i] + residual[offset + i];
      } else {
#pragma omp simd
        for (int64_t i = 0; i < kChannelBlock; ++i) nhwc[offset + i] = from[i];
      }
    }
}

// nhwc_to_blocked of GroupNorm's output (see norm_impl.h): per-channel affine, then SiLU if asked.
LCMD_VECTOR_CLONES
void normalized_to_blocked(const float* nhwc, float* blocked, int64_t channels, int64_t pixels, int64_t begin,
                           int64_t end, const float* mean_hi, const float* mean_lo, const float* scale,
                           const float* beta, bool silu) {
  for (int64_t b = 0; b < channels / kChannelBlock; ++b) {
    const int64_t c = b * kChannelBlock;
    for (int64_t p = begin; p < end; ++p) {
      const float* from = nhwc + p * channels + c;
      float* to = blocked + (b * pixels + p) * kChannelBlock;
      if (silu) {
#pragma omp simd
        for (int64_t i = 0; i < kChannelBlock; ++i)
          to[i] = detail::x_sigmoid(
              detail::group_normalized(from[i], mean_hi[c + i], mean_lo[c + i], scale[c + i], beta[c + i]), 1.f);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < kChannelBlock; ++i)
          to[i] = detail::group_normalized(from[i], mean_hi[c + i], mean_lo[c + i], scale[c + i], beta[c + i]);
      }
    }
  }
}

// nhwc_to_blocked of an image upsampled 2x (nearest) on the fly: pixels [begin, end) (at most
// kPixelTile) of the upsampled rows from first_row on, read from `image` (width pixels wide).
LCMD_VECTOR_CLONES
void upsampled_to_blocked(const float* image, int64_t width, int64_t first_row, int64_t channels, float* blocked,
                          int64_t pixels, int64_t begin, int64_t end) {
  const float* source[kPixelTile];
  for (int64_t p = begin; p < end; ++p) {
    const int64_t row = first_row + p / (2 * width), col = p % (2 * width);
    source[p - begin] = image + ((row / 2) * width + col / 2) * channels;
  }
  for (int64_t b = 0; b < channels / kChannelBlock; ++b)
    for (int64_t p = begin; p < end; ++p) {
      const float* from = source[p - begin] + b * kChannelBlock;
      float* to = blocked + (b * pixels + p) * kChannelBlock;
#pragma omp simd
      for (int64_t i = 0; i < kChannelBlock; ++i) to[i] = from[i];
    }
}

// Pixels [begin, end) of one image's GroupNorm output (see norm_impl.h), NHWC to NHWC. The same
// loop as group_norm's own (norm.cpp), kept in this file like normalized_to_blocked: clang's
// build (the sanitizer CI) rounded differently when both called one shared out-of-line clone.
LCMD_VECTOR_CLONES
void normalize_pixels(const float* nhwc, float* out, int64_t channels, int64_t begin, int64_t end, const float* mean_hi,
                      const float* mean_lo, const float* scale, const float* beta, bool silu) {
  for (int64_t p = begin; p < end; ++p) {
    const float* from = nhwc + p * channels;
    float* to = out + p * channels;
    if (silu) {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c)
        to[c] = detail::x_sigmoid(detail::group_normalized(from[c], mean_hi[c], mean_lo[c], scale[c], beta[c]), 1.f);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c)
        to[c] = detail::group_normalized(from[c], mean_hi[c], mean_lo[c], scale[c], beta[c]);
    }
  }
}

// Rows [first, last) of an image upsampled 2x (nearest) from `image` (width pixels wide), NHWC.
void upsample_rows(const float* image, int64_t width, int64_t channels, int64_t first, int64_t last, float* out) {
  for (int64_t row = first; row < last; ++row)
    for (int64_t col = 0; col < 2 * width; ++col)
      std::memcpy(out + ((row - first) * 2 * width + col) * channels, image + ((row / 2) * width + col / 2) * channels,
                  sizeof(float) * channels);
}

// What a convolution reads: a stored map, or one made from it as the Winograd path converts its
// input (GroupNorm of it, or it upsampled 2x). `shape` is the convolution's input shape.
struct ConvSource {
  const Tensor& map;
  Shape shape;
  const detail::GroupNormAffine* norm = nullptr;
  bool upsampled = false;

  bool is_stored_map() const { return !norm && !upsampled; }
};

// Runs convert(image, begin, end) over pixel tiles of every image, on all threads.
template <class F>
void for_pixel_tiles(int64_t batch, int64_t pixels, int64_t channels, F&& convert) {
  const int64_t tiles = (pixels + kPixelTile - 1) / kPixelTile;
  const int64_t tiles_per_thread = std::max<int64_t>(1, detail::kElementwiseGrain / (kPixelTile * channels));
  detail::parallel_range(batch * tiles, tiles_per_thread, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t image = t / tiles, begin = (t % tiles) * kPixelTile;
      convert(image, begin, std::min(pixels, begin + kPixelTile));
    }
  });
}

std::atomic<size_t> band_budget{detail::kWinogradBandBytes};

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace

namespace detail {

size_t winograd_working_bytes(int64_t pixels, int64_t cin, int64_t cout) {
  // Per pixel and channel: the blocked copy (1 float) and the transformed 6x6 tiles per 4x4
  // outputs (36 / 16 floats), on the input and on the output side.
  return static_cast<size_t>(pixels) * static_cast<size_t>(cin + cout) * sizeof(float) * (16 + 36) / 16;
}

std::vector<RowBand> winograd_row_bands(int64_t batch, int64_t height, int64_t width, int64_t cin, int64_t cout,
                                        size_t budget_bytes) {
  const int64_t row_pixels = batch * width;
  const size_t row_bytes = std::max<size_t>(1, winograd_working_bytes(row_pixels, cin, cout));
  const int64_t min_rows = round_up((kWinogradBandMinPixels + row_pixels - 1) / row_pixels, kWinogradTileRows);
  const int64_t budget_rows =
      std::max(min_rows, static_cast<int64_t>(budget_bytes / row_bytes) / kWinogradTileRows * kWinogradTileRows);
  if (budget_rows >= height) return {{0, height}};
  // Equal bands rather than full ones and a small remainder: no more memory, fewer rows per
  // call. No more bands than keep each at min_rows (a budget below that is not met).
  const int64_t count = std::max<int64_t>(1, std::min((height + budget_rows - 1) / budget_rows, height / min_rows));
  const int64_t rows = round_up((height + count - 1) / count, kWinogradTileRows);
  std::vector<RowBand> bands;
  for (int64_t begin = 0; begin < height; begin += rows) bands.push_back({begin, std::min(height, begin + rows)});
  return bands;
}

size_t winograd_band_budget() { return band_budget.load(); }
void set_winograd_band_budget(size_t bytes) { band_budget.store(bytes); }

}  // namespace detail

struct Conv2d::Impl {
  int cin = 0, cout = 0, kernel = 0, stride = 1, padding = 0;
  bool has_bias = false;
  Precision precision = Precision::FP32;
  Conv3x3Algorithm conv3x3_algorithm = Conv3x3Algorithm::kDirect;
  bool winograd_capable = false;    // weights are OIhw16i16o f32, usable by Winograd and direct
  std::optional<Linear> pointwise;  // set for 1x1, stride 1, no padding
  memory weights;                   // [cout, cin, k, k] packed, in weights_type(precision)
  memory bias;                      // [cout] float32
  detail::Int8Scaling int8;         // INT8 only
  std::unique_ptr<const detail::WinogradF2> winograd_f2;  // set for layers it runs (then `weights` is empty)
  std::mutex mutex;
  std::map<PlanKey, std::shared_ptr<const ConvPlan>> plans;

  int64_t output_size(int64_t in) const { return (in + 2 * padding - kernel) / stride + 1; }

  std::string describe() const {
    return "Conv2d(cin=" + std::to_string(cin) + ", cout=" + std::to_string(cout) + ", kernel=" +
           std::to_string(kernel) + ", stride=" + std::to_string(stride) + ", padding=" + std::to_string(padding) +
           ", " + precision_name(precision) + ")";
  }

  memory::desc source_desc(const PlanKey& key, dt type, tag layout) const {
    return memory::desc({key.batch, cin, key.height, key.width}, type, layout);
  }
  memory::desc destination_desc(const PlanKey& key, tag layout) const {
    return memory::desc({key.batch, cout, output_size(key.height), output_size(key.width)}, dt::f32, layout);
  }
  memory::desc any_weights() const {
    return memory::desc({cout, cin, kernel, kernel}, detail::weights_type(precision), tag::any);
  }
  memory::desc winograd_weights() const { return memory::desc({cout, cin, kernel, kernel}, dt::f32, tag::OIhw16i16o); }

  dnnl::primitive_attr attributes(bool residual) const {
    // The output channel is dimension 1 of the NCHW-ordered destination.
    if (precision == Precision::INT8)  // the zero point is folded into the bias (see int8_padding)
      return detail::int8_attributes(int8.weight_scales, 1, 4, residual, /*source_zero_point=*/false);
    dnnl::primitive_attr attr = detail::user_scratchpad_attr();
    if (residual) {  // dst holds the residual on entry: dst = conv(x) + b + dst
      dnnl::post_ops ops;
      ops.append_sum(1.f);
      attr.set_post_ops(ops);
    }
    return attr;
  }

  // pad_top / pad_bottom: the rows of zeros above and below src (a band inside the image has
  // real rows there instead); pad_sides: the columns left and right.
  dnnl::convolution_forward::primitive_desc make_pd(dnnl::prop_kind kind, dnnl::algorithm algorithm,
                                                    const memory::desc& src, const memory::desc& weights_md,
                                                    const memory::desc& dst, bool residual, int64_t pad_top,
                                                    int64_t pad_bottom, int64_t pad_sides) const {
    const memory::dims strides{stride, stride}, pad_l{pad_top, pad_sides}, pad_r{pad_bottom, pad_sides};
    const auto desc = has_bias ? dnnl::convolution_forward::desc(kind, algorithm, src, weights_md, bias.get_desc(), dst,
                                                                 strides, pad_l, pad_r)
                               : dnnl::convolution_forward::desc(kind, algorithm, src, weights_md, dst, strides, pad_l,
                                                                 pad_r);
    return dnnl::convolution_forward::primitive_desc(desc, attributes(residual), detail::cpu_engine());
  }

  // An int8 convolution reads its input quantized into a map padded by the zero point
  // (detail::PaddedMap, see SourceArguments), so its primitive has no padding of its own.
  int64_t int8_padding() const { return precision == Precision::INT8 ? padding : 0; }

  dnnl::convolution_forward::primitive_desc make_direct_pd(const PlanKey& key, const memory::desc& weights_md) const {
    const int64_t extra = 2 * int8_padding(), own = padding - int8_padding();
    const memory::desc src({key.batch, cin, key.height + extra, key.width + extra}, detail::source_type(precision),
                           tag::nhwc);
    return make_pd(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, weights_md,
                   destination_desc(key, tag::nhwc), key.residual, own, own, own);
  }

  // forward_training is what makes oneDNN take OIhw16i16o weights and transform them per
  // call; for inference it insists on its 4x larger pre-transformed layout. The residual is
  // added while converting the output back to NHWC. in_rows input rows (padded by pad_top and
  // pad_bottom) give out_rows output rows.
  dnnl::convolution_forward::primitive_desc make_winograd_pd(int64_t batch, int64_t in_rows, int64_t out_rows,
                                                             int64_t width, int64_t pad_top, int64_t pad_bottom) const {
    return make_pd(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_winograd,
                   memory::desc({batch, cin, in_rows, width}, dt::f32, tag::nChw16c), winograd_weights(),
                   memory::desc({batch, cout, out_rows, output_size(width)}, dt::f32, tag::nChw16c), false, pad_top,
                   pad_bottom, padding);
  }
  dnnl::convolution_forward::primitive_desc make_winograd_pd(const PlanKey& key) const {
    return make_winograd_pd(key.batch, key.height, output_size(key.height), key.width, padding, padding);
  }

  // A Winograd plan in the bands the budget asks for, else in one piece (should oneDNN refuse
  // a band's shape or padding), else nothing.
  std::optional<ConvPlan> create_winograd_plan(const PlanKey& key) const {
    const int64_t out_h = output_size(key.height);
    const auto bands = detail::winograd_row_bands(key.batch, out_h, key.width, cin, cout, detail::winograd_band_budget());
    if (auto plan = create_winograd_plan(key, bands)) return plan;
    if (bands.size() > 1) return create_winograd_plan(key, {{0, out_h}});
    return std::nullopt;
  }

  std::optional<ConvPlan> create_winograd_plan(const PlanKey& key, const std::vector<detail::RowBand>& row_bands) const {
    try {
      // Bands of the same height and padding (all but the first and last) share a primitive.
      std::map<std::array<int64_t, 4>, size_t> first_band_of;  // geometry -> the band that made its primitive
      std::vector<WinogradBand> bands;
      for (const detail::RowBand rows : row_bands) {
        // The input rows the 3x3 window reads, clipped to the image: zero padding only where the
        // window reaches past the image's top or bottom edge, real rows elsewhere.
        const int64_t wanted_begin = rows.begin - padding, wanted_end = rows.end - 1 - padding + kernel;
        const int64_t in_begin = std::max<int64_t>(0, wanted_begin), in_end = std::min(key.height, wanted_end);
        const std::array<int64_t, 4> geometry{in_end - in_begin, rows.end - rows.begin, in_begin - wanted_begin,
                                              wanted_end - in_end};
        const auto [it, is_new] = first_band_of.emplace(geometry, bands.size());
        if (!is_new) {
          const WinogradBand& same = bands[it->second];
          bands.push_back({rows.begin, rows.end, in_begin, in_end, same.pd, same.primitive});
          continue;
        }
        auto pd = make_winograd_pd(key.batch, geometry[0], geometry[1], key.width, geometry[2], geometry[3]);
        if (detail::is_reference_impl(pd)) return std::nullopt;
        bands.push_back({rows.begin, rows.end, in_begin, in_end, pd, dnnl::convolution_forward(pd)});
      }
      const WinogradBand& first = bands.front();
      return ConvPlan{ConvAlgorithm::kWinograd, first.pd, first.primitive, weights, std::nullopt, std::move(bands)};
    } catch (const dnnl::error&) {  // e.g. padding the Winograd kernels do not take
      return std::nullopt;
    }
  }

  ConvPlan create_direct_plan(const PlanKey& key) const {
    std::optional<dnnl::convolution_forward::primitive_desc> pd;
    try {
      pd = make_direct_pd(key, weights.get_desc());
    } catch (const dnnl::error&) {  // no implementation at all takes the packed layout here
    }
    memory plan_weights = weights;
    if (!pd || detail::is_reference_impl(*pd)) {
      // No fast kernel takes the packed layout at this shape: give this plan its own copy in
      // the layout it prefers rather than running the naive loops.
      pd = make_direct_pd(key, any_weights());
      plan_weights = detail::relayout(weights, pd->weights_desc());
    }
    std::optional<detail::ReorderStep> to_bf16;
    if (precision == Precision::BF16) to_bf16 = detail::make_reorder(source_desc(key, dt::f32, tag::nhwc), pd->src_desc());
    return ConvPlan{ConvAlgorithm::kDirect, *pd, dnnl::convolution_forward(*pd), plan_weights, std::move(to_bf16), {}};
  }

  std::shared_ptr<const ConvPlan> create_plan(const PlanKey& key) const {
    if (winograd_capable && key.batch * output_size(key.height) * output_size(key.width) >= kWinogradMinPixels)
      if (auto plan = create_winograd_plan(key)) return std::make_shared<const ConvPlan>(std::move(*plan));
    return std::make_shared<const ConvPlan>(create_direct_plan(key));
  }

  std::shared_ptr<const ConvPlan> plan(const PlanKey& key) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it == plans.end()) it = plans.emplace(key, create_plan(key)).first;
    return it->second;
  }

  PlanKey packing_key() const {
    const int64_t size = std::max<int64_t>(kPackingSize, kernel);
    return PlanKey{1, size, size, false, num_threads()};
  }

  // Winograd needs 3x3, stride 1, padding <= 1, whole channel blocks and weights whose per-call
  // transform fits kWinogradWeightScratchBytes; the layer qualifies
  // if oneDNN has fast Winograd and direct kernels on OIhw16i16o weights for it.
  bool winograd_works() const {
    if (precision != Precision::FP32 || kernel != 3 || stride != 1 || padding > 1 || cin % kChannelBlock != 0 ||
        cout % kChannelBlock != 0 || detail::winograd_weight_scratch_bytes(cin, cout) > detail::kWinogradWeightScratchBytes)
      return false;
    try {
      const PlanKey key = packing_key();
      return !detail::is_reference_impl(make_winograd_pd(key)) &&
             !detail::is_reference_impl(make_direct_pd(key, winograd_weights()));
    } catch (const dnnl::error&) {
      return false;
    }
  }

  // See Conv3x3Algorithm (ops.h). Layers thinner than 16 channels (conv_in, conv_out) run
  // direct: products over 4 channels are memory-bound either way.
  bool winograd_f2_works() const {
    return (precision == Precision::BF16 || precision == Precision::INT8) &&
           conv3x3_algorithm == Conv3x3Algorithm::kWinograd && kernel == 3 && stride == 1 && padding == 1 &&
           std::min(cin, cout) >= kChannelBlock;
  }

  // Winograd F(2x2, 3x3) for this layer's weights ([cout, cin, 3, 3] float32) at its precision.
  std::unique_ptr<const detail::WinogradF2> make_winograd_f2(const float* weight) const {
    if (precision == Precision::INT8) return std::make_unique<const detail::WinogradF2Int8>(weight, cin, cout);
    return std::make_unique<const detail::WinogradF2Bf16>(weight, cin, cout);
  }

  // The direct primitive the packed layout is chosen for, or nothing if oneDNN has only its
  // reference loops (or nothing at all) at this precision.
  std::optional<dnnl::convolution_forward::primitive_desc> packing_pd() const {
    try {
      auto pd = make_direct_pd(packing_key(), any_weights());
      if (precision == Precision::FP32 || !detail::is_reference_impl(pd)) return pd;
    } catch (const dnnl::error&) {
    }
    return std::nullopt;
  }

  // Packs `given` ([cout, cin, k, k] in any layout and float dtype) into the layout this layer
  // computes on. `in_place`: given's data outlives the layer (a packed model's mapping), so
  // weights already in that layout are used as they are, without a copy.
  void pack_weights(const memory& given, bool in_place) {
    if (winograd_f2_works()) {
      try {
        const memory::desc plain_md({cout, cin, kernel, kernel}, dt::f32, tag::oihw);
        if (given.get_desc() == plain_md) {
          winograd_f2 = make_winograd_f2(static_cast<const float*>(given.get_data_handle()));
        } else {
          const std::vector<float> plain = detail::to_plain_f32(given, {cout, cin, kernel, kernel}, tag::oihw);
          winograd_f2 = make_winograd_f2(plain.data());
        }
        if (in_place) detail::count_stored_weights_use(false);  // stored untransformed: transformed here
        return;
      } catch (const std::runtime_error&) {  // no fast matmul for its products: run direct
      }
    }
    winograd_capable = winograd_works();
    std::optional<detail::Int8Weights> quantized;
    std::optional<dnnl::convolution_forward::primitive_desc> pd;
    if (!winograd_capable) {
      pd = detail::packing_pd_or_fp32(precision, describe(), given, {cout, cin, kernel, kernel}, tag::oihw, cout, int8,
                                      quantized, [&] { return packing_pd(); });
      if (!pd) throw std::runtime_error(describe() + ": oneDNN has no convolution for this layer");
    }
    const memory::desc target = winograd_capable ? winograd_weights() : pd->weights_desc();
    std::optional<memory> int8_values;
    if (quantized) {
      int8_values = detail::wrap_memory({{cout, cin, kernel, kernel}, dt::s8, tag::oihw}, quantized->values.data());
      int8.weight_sums = detail::weight_sums(*quantized);
    }
    weights = detail::keep_weights(given, int8_values, target, in_place);
  }

  // From stored Winograd-transformed weights (a bf16 Winograd layer's, see stored_weights):
  // in place on this path, else transformed back into weights for this layer's own packing.
  void pack_transformed(const memory& transformed) {
    if (winograd_f2_works()) {
      try {
        if (precision == Precision::INT8) {
          winograd_f2 = std::make_unique<const detail::WinogradF2Int8>(transformed, cin, cout);
          detail::count_stored_weights_use(false);  // quantized here
        } else {
          winograd_f2 = std::make_unique<const detail::WinogradF2Bf16>(transformed, cin, cout, /*in_place=*/true);
        }
        return;
      } catch (const std::runtime_error&) {  // no fast matmul: run direct
      }
    }
    detail::count_stored_weights_use(false);
    const std::vector<float> plain = detail::inverse_winograd_f2(transformed, cin, cout);
    pack_weights(detail::wrap_memory({{cout, cin, kernel, kernel}, dt::f32, tag::oihw}, plain.data()), false);
  }

  // Geometry, precision and bias; true when the layer is a 1x1 product run by `pointwise`.
  bool init(int in_channels, int out_channels, int kernel_size, int stride_, int padding_, const float* bias_values,
            Precision requested) {
    cin = in_channels;
    cout = out_channels;
    kernel = kernel_size;
    stride = stride_;
    padding = padding_;
    has_bias = bias_values != nullptr;
    precision = requested;
    if (cin <= 0 || cout <= 0 || kernel <= 0 || stride <= 0 || padding < 0)
      throw std::invalid_argument(describe() + ": channels, kernel and stride must be positive, padding >= 0");
    if (kernel == 1 && stride == 1 && padding == 0) return true;
    precision = detail::layer_precision(requested, cin, cout);
    // An int8 layer always has a bias: its source zero point is folded into it.
    if (bias_values || precision == Precision::INT8) {
      has_bias = true;
      std::vector<float> values = bias_values ? std::vector<float>(bias_values, bias_values + cout)
                                              : std::vector<float>(static_cast<size_t>(cout), 0.f);
      bias = memory({{cout}, dt::f32, tag::x}, detail::cpu_engine());
      std::memcpy(bias.get_data_handle(), values.data(), sizeof(float) * cout);
      if (precision == Precision::INT8) int8.bias = std::move(values);
    }
    return false;
  }

  // Checks x (and the residual) against the layer; returns the plan key of the call.
  PlanKey key_for(const Shape& x, const Tensor* residual) const {
    if (x.size() != 4 || x[3] != cin)
      throw std::invalid_argument(describe() + ": input " + shape_str(x) + " must be NHWC [N, H, W, " +
                                  std::to_string(cin) + "]");
    const int64_t out_h = output_size(x[1]), out_w = output_size(x[2]);
    if (x[1] <= 0 || x[2] <= 0 || out_h <= 0 || out_w <= 0)
      throw std::invalid_argument(describe() + ": input " + shape_str(x) + " is too small for the kernel");
    const Shape out_shape{x[0], out_h, out_w, cout};
    if (residual && residual->shape() != out_shape)
      throw std::invalid_argument(describe() + ": residual " + shape_str(residual->shape()) +
                                  " does not match the output " + shape_str(out_shape));
    return PlanKey{x[0], x[1], x[2], residual != nullptr, num_threads()};
  }

  // The int8 source of a direct plan (see detail::PaddedMap): an upsampled input is quantized
  // row by row as it is made, so the 4x larger map is never stored.
  detail::PaddedMap int8_source(const ConvSource& source) const {
    const Shape& in = source.shape;
    detail::PaddedMap padded{in[0], in[1], in[2], cin, int8_padding(), {}, std::nullopt};
    const float* map = source.map.data();
    if (source.upsampled) {
      const int64_t width = source.map.dim(2), height = source.map.dim(1);
      padded.make_row = [map, width, height, this](int64_t image, int64_t y, float* out) {
        upsample_rows(map + image * height * width * cin, width, cin, y, y + 1, out);
      };
      padded.range = detail::value_range(map, source.map.numel());  // the same values, each 4 times
    }
    return padded;
  }

  // y = conv(source) (+ residual): the primitive's sum post-op adds the residual copied into y
  // (or already there: residual null on a plan made for one). An upsampled source only at INT8.
  void run_direct(const ConvPlan& plan, const ConvSource& source, const Tensor* residual, Tensor& y) const {
    if (residual) detail::parallel_copy(y.data(), residual->data(), y.numel());
    const Tensor& x = source.map;
    const detail::PaddedMap padded = precision == Precision::INT8 ? int8_source(source) : detail::PaddedMap{};
    const detail::SourceArguments arguments(precision, x.data(), x.numel(), plan.pd.src_desc(),
                                            plan.to_bf16 ? &*plan.to_bf16 : nullptr, bias, &int8,
                                            precision == Precision::INT8 ? &padded : nullptr);
    std::unordered_map<int, memory> args{{DNNL_ARG_WEIGHTS, plan.weights},
                                         {DNNL_ARG_DST, detail::wrap_memory(plan.pd.dst_desc(), y.data())}};
    arguments.add_to(args);
    detail::run_primitive(plan.primitive, plan.pd, std::move(args));
  }

  // y = conv(source) (+ residual), band by band, converting each band's rows to and from the
  // blocked layout around its primitive.
  void run_winograd(const ConvPlan& plan, const ConvSource& source, const Tensor* residual, Tensor& y) const {
    for (const WinogradBand& band : plan.bands) run_winograd_band(band, plan.weights, source, residual, y);
  }

  void run_winograd_band(const WinogradBand& band, const memory& band_weights, const ConvSource& source,
                         const Tensor* residual, Tensor& y) const {
    const memory::desc src_md = band.pd.src_desc(), dst_md = band.pd.dst_desc();
    auto* src = static_cast<float*>(detail::thread_buffer(detail::ThreadBuffer::kBlockedSource, src_md.get_size()));
    auto* dst = static_cast<float*>(detail::thread_buffer(detail::ThreadBuffer::kBlockedDestination, dst_md.get_size()));
    // An NHWC row band of an image is contiguous: it is converted like a whole image of fewer rows.
    const Shape& in = source.shape;
    const int64_t in_image = in[1] * in[2], in_first = band.in_begin * in[2];
    const int64_t in_band = (band.in_end - band.in_begin) * in[2];
    for_pixel_tiles(in[0], in_band, cin, [&](int64_t image, int64_t begin, int64_t end) {
      float* to = src + image * in_band * cin;
      const float* map = source.map.data();
      if (source.upsampled) {
        const int64_t width = source.map.dim(2);
        upsampled_to_blocked(map + image * source.map.dim(1) * width * cin, width, band.in_begin, cin, to, in_band, begin,
                             end);
      } else if (source.norm) {
        const detail::GroupNormAffine& a = *source.norm;
        const int64_t at = image * cin;
        normalized_to_blocked(map + (image * in_image + in_first) * cin, to, cin, in_band, begin, end,
                              a.mean_hi.data() + at, a.mean_lo.data() + at, a.scale.data() + at, a.beta.data() + at,
                              a.silu);
      } else {
        nhwc_to_blocked(map + (image * in_image + in_first) * cin, to, cin, in_band, begin, end);
      }
    });
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, detail::wrap_memory(src_md, src)},
                                         {DNNL_ARG_WEIGHTS, band_weights},
                                         {DNNL_ARG_DST, detail::wrap_memory(dst_md, dst)}};
    if (has_bias) args.emplace(DNNL_ARG_BIAS, bias);
    detail::run_primitive(band.primitive, band.pd, std::move(args));
    const int64_t out_image = y.dim(1) * y.dim(2), out_first = band.out_begin * y.dim(2);
    const int64_t out_band = (band.out_end - band.out_begin) * y.dim(2);
    for_pixel_tiles(y.dim(0), out_band, cout, [&](int64_t image, int64_t begin, int64_t end) {
      const int64_t offset = (image * out_image + out_first) * cout;
      blocked_to_nhwc(dst + image * out_band * cout, residual ? residual->data() + offset : nullptr, y.data() + offset,
                      cout, out_band, begin, end);
    });
  }

  // y = conv(source) (+ residual) on winograd_f2, making a source's rows band by band.
  void run_winograd_f2(const ConvSource& source, const Tensor* residual, Tensor& y) const {
    const Shape& in = source.shape;
    const float* map = source.map.data();
    detail::MakeRows make_rows;
    if (source.norm) {
      make_rows = [&](int64_t image, int64_t first, int64_t last, float* out) {
        const detail::GroupNormAffine& a = *source.norm;
        const int64_t at = image * cin;
        const float* rows = map + (image * in[1] + first) * in[2] * cin;
        detail::parallel_range((last - first) * in[2], std::max<int64_t>(1, detail::kElementwiseGrain / cin),
                               [&](int64_t begin, int64_t end) {
                                 normalize_pixels(rows, out, cin, begin, end, a.mean_hi.data() + at,
                                                  a.mean_lo.data() + at, a.scale.data() + at, a.beta.data() + at,
                                                  a.silu);
                               });
      };
    } else if (source.upsampled) {
      make_rows = [&](int64_t image, int64_t first, int64_t last, float* out) {
        const int64_t width = source.map.dim(2);
        const float* from = map + image * source.map.dim(1) * width * cin;
        detail::parallel_range(last - first, std::max<int64_t>(1, detail::kElementwiseGrain / (2 * width * cin)),
                               [&](int64_t begin, int64_t end) {
                                 upsample_rows(from, width, cin, first + begin, first + end,
                                               out + begin * 2 * width * cin);
                               });
      };
    }
    winograd_f2->run(in[0], in[1], in[2], source.is_stored_map() ? map : nullptr, make_rows,
                     has_bias ? static_cast<const float*>(bias.get_data_handle()) : nullptr,
                     residual ? residual->data() : nullptr, y.data(),
                     std::min(detail::kWinogradF2BandBytes, detail::winograd_band_budget()));
  }

  // True when calls of this key can take a made input (ConvSource): on Winograd, whose layout
  // conversion makes it, or an upsampled one at INT8, whose quantization makes it row by row
  // (creates and caches the plan). A GroupNorm input at INT8 is made first: quantizing it as it
  // is made needs its range first, so GroupNorm and SiLU would be computed twice, and that took
  // the 512x512 VAE decode from 3.87 to 4.26 s (the upsampled input: 3.92 -> 3.85 s).
  bool takes_made_input(const PlanKey& key, bool upsampled) {
    if (pointwise || key.batch == 0) return false;
    if (winograd_f2 || (precision == Precision::INT8 && upsampled)) return true;
    detail::sync_openmp_threads();
    return plan(key)->algorithm == ConvAlgorithm::kWinograd;
  }

  // True when a call may write its result into `residual`'s storage (see run): no other tensor
  // shares it, and it is not the input.
  static bool accumulable(const Tensor& x, const Tensor& residual) {
    return residual.sole_owner() && residual.data() != x.data();
  }

  // y = conv(source) (+ residual) for a call checked by key_for; a source other than a stored
  // map only where takes_made_input(key). `accumulate` (the residual itself, see accumulable):
  // a direct plan writes y into its storage, its sum post-op adding what is there, instead of
  // into a new map the residual is copied into first. The Winograd paths add the residual in
  // their output conversion, which reads it while writing y: they always take a new map.
  Tensor run(const ConvSource& source, const PlanKey& key, const Tensor* residual, Tensor* accumulate = nullptr) {
    const Shape out_shape{key.batch, output_size(key.height), output_size(key.width), cout};
    if (key.batch == 0) return Tensor(out_shape);
    count_macs(static_cast<uint64_t>(shape_numel(out_shape)) * cin * kernel * kernel);
    detail::sync_openmp_threads();
    const auto conv_plan = winograd_f2 ? nullptr : plan(key);
    if (winograd_f2 || conv_plan->algorithm == ConvAlgorithm::kWinograd) {
      Tensor y(out_shape);
      if (winograd_f2)
        run_winograd_f2(source, residual, y);
      else
        run_winograd(*conv_plan, source, residual, y);
      return y;
    }
    if (!source.is_stored_map() && !(precision == Precision::INT8 && source.upsampled))
      throw std::logic_error(describe() + ": a made input on a direct plan");
    Tensor y = accumulate ? std::move(*accumulate) : Tensor(out_shape);
    run_direct(*conv_plan, source, accumulate ? nullptr : residual, y);
    return y;
  }
};

Conv2d::Conv2d() = default;
Conv2d::~Conv2d() = default;
Conv2d::Conv2d(Conv2d&&) noexcept = default;
Conv2d& Conv2d::operator=(Conv2d&&) noexcept = default;

Conv2d::Conv2d(const float* weight, const float* bias, int cin, int cout, int kernel, int stride, int padding,
               Precision precision, Conv3x3Algorithm algorithm)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.conv3x3_algorithm = algorithm;
  const bool pointwise = m.init(cin, cout, kernel, stride, padding, bias, precision);
  if (!weight) throw std::invalid_argument(m.describe() + ": weight pointer is null");
  if (pointwise) {
    m.pointwise.emplace(weight, bias, cin, cout, precision);  // [cout, cin, 1, 1] == [cout, cin]
    m.precision = m.pointwise->precision();
    return;
  }
  m.pack_weights(detail::wrap_memory({{cout, cin, kernel, kernel}, dt::f32, tag::oihw}, weight), false);
}

Conv2d::Conv2d(const StoredWeights& weights, const float* bias, int cin, int cout, int kernel, int stride, int padding,
               Precision precision, Conv3x3Algorithm algorithm)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.conv3x3_algorithm = algorithm;
  if (m.init(cin, cout, kernel, stride, padding, bias, precision)) {
    m.pointwise.emplace(weights, bias, cin, cout, precision);
    m.precision = m.pointwise->precision();
    return;
  }
  if (kernel == 3 && detail::is_winograd_f2_layout(weights))
    m.pack_transformed(detail::stored_weights_memory(weights, detail::winograd_f2_dims(cin, cout)));
  else
    m.pack_weights(detail::stored_weights_memory(weights, {cout, cin, kernel, kernel}), true);
}

StoredWeights Conv2d::stored_weights() const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  if (impl_->pointwise) return impl_->pointwise->stored_weights();
  const memory& weights = impl_->winograd_f2 ? impl_->winograd_f2->transformed_weights() : impl_->weights;
  const memory::desc md = weights.get_desc();
  return {detail::describe_layout(md), weights.get_data_handle(), md.get_size()};
}

Tensor Conv2d::operator()(const Tensor& x, const Tensor* residual) const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  Impl& m = *impl_;
  const PlanKey key = m.key_for(x.shape(), residual);
  if (m.pointwise) return (*m.pointwise)(x, residual);
  return m.run(ConvSource{x, x.shape()}, key, residual);
}

Tensor Conv2d::operator()(const Tensor& x, Tensor&& residual) const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  Impl& m = *impl_;
  const PlanKey key = m.key_for(x.shape(), &residual);
  if (m.pointwise) return (*m.pointwise)(x, std::move(residual));
  return m.run(ConvSource{x, x.shape()}, key, &residual, Impl::accumulable(x, residual) ? &residual : nullptr);
}

Tensor Conv2d::normalized(const Tensor& x, const GroupNormArgs& norm, Tensor&& residual) const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  Impl& m = *impl_;
  const PlanKey key = m.key_for(x.shape(), &residual);
  if (!m.takes_made_input(key, /*upsampled=*/false))
    return (*this)(group_norm(x, norm.groups, norm.eps, norm.gamma, norm.beta, norm.silu), std::move(residual));
  const detail::GroupNormAffine affine = detail::group_norm_affine(x, norm);
  return m.run(ConvSource{x, x.shape(), &affine}, key, &residual, Impl::accumulable(x, residual) ? &residual : nullptr);
}

Tensor Conv2d::normalized(const Tensor& x, const GroupNormArgs& norm, const Tensor* residual) const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  Impl& m = *impl_;
  const PlanKey key = m.key_for(x.shape(), residual);
  if (!m.takes_made_input(key, /*upsampled=*/false))
    return (*this)(group_norm(x, norm.groups, norm.eps, norm.gamma, norm.beta, norm.silu), residual);
  const detail::GroupNormAffine affine = detail::group_norm_affine(x, norm);
  return m.run(ConvSource{x, x.shape(), &affine}, key, residual);
}

Tensor Conv2d::upsampled(const Tensor& x, const Tensor* residual) const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  Impl& m = *impl_;
  if (x.rank() != 4)
    throw std::invalid_argument(m.describe() + ": input " + shape_str(x.shape()) + " to upsample must be NHWC");
  const Shape shape{x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3)};
  const PlanKey key = m.key_for(shape, residual);
  if (!m.takes_made_input(key, /*upsampled=*/true)) return (*this)(upsample_nearest2x(x), residual);
  return m.run(ConvSource{x, shape, nullptr, /*upsampled=*/true}, key, residual);
}

int Conv2d::in_channels() const { return impl_ ? impl_->cin : 0; }
int Conv2d::out_channels() const { return impl_ ? impl_->cout : 0; }
Precision Conv2d::precision() const { return impl_ ? impl_->precision : Precision::FP32; }

std::string Conv2d::implementation(const Shape& input) const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  Impl& m = *impl_;
  const PlanKey key = m.key_for(input, nullptr);
  if (m.pointwise) return m.pointwise->implementation(key.batch * key.height * key.width);
  if (key.batch == 0) throw std::invalid_argument(m.describe() + ": batch must be positive to run a kernel");
  detail::sync_openmp_threads();
  if (m.winograd_f2) return std::string(precision_name(m.precision)) + " winograd-f2 " + m.winograd_f2->implementation();
  const auto plan = m.plan(key);
  std::string algorithm = " direct ";
  if (plan->algorithm == ConvAlgorithm::kWinograd)
    algorithm = plan->bands.size() > 1 ? " winograd in " + std::to_string(plan->bands.size()) + " bands " : " winograd ";
  return std::string(precision_name(m.precision)) + algorithm + plan->pd.impl_info_str();
}

}  // namespace lcmd::ops
