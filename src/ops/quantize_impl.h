// Private to src/ops: the precision-specific pieces Conv2d and Linear share: data types per
// precision, int8 quantization of weights (symmetric, per output channel) and activations
// (asymmetric, per tensor, at run time), and the oneDNN attributes that turn the int32
// accumulators back into float32.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "ops/dnnl_impl.h"

namespace lcmd::ops::detail {

// The oneDNN types of convolution / matmul sources and weights at a precision (int8: u8
// activations with a zero point, s8 weights).
dnnl::memory::data_type source_type(Precision precision);
dnnl::memory::data_type weights_type(Precision precision);

// Weights use the symmetric int8 range [-127, 127], so that zero is exact and both signs get
// the same resolution.
constexpr float kInt8Max = 127.f;

// Weights quantized per output channel: values[c * per_channel + i] = round(w / scales[c]),
// scales[c] = max_i |w[c, i]| / 127 (1 for an all-zero channel).
struct Int8Weights {
  std::vector<int8_t> values;
  std::vector<float> scales;
};
Int8Weights quantize_per_channel(const float* weights, int64_t channels, int64_t per_channel);

// Activations quantized as one tensor: x ~ scale * (q - zero_point) with q in [0, 255].
// The range [min(x, 0), max(x, 0)] is spread over the 256 levels, so zero is exact (zero
// padding stays zero) and inputs that are mostly of one sign, such as SiLU outputs (>= -0.28),
// get twice the resolution a symmetric range would give them.
struct ActivationQuantization {
  float scale = 1.f;
  int32_t zero_point = 0;
};

// Quantizes n activations on all threads: q = round(x / scale) + zero_point (ties to even).
// An all-zero input gets scale 1. If an input is NaN or infinite the scale is NaN (and q all
// zero), so the layer's output is NaN, as in fp32.
ActivationQuantization quantize_activations(const float* x, int64_t n, uint8_t* q);

// The smallest and largest of n floats on all threads; both NaN if an element is NaN or
// infinite.
struct Range {
  float min, max;
};
Range value_range(const float* x, int64_t n);

// Symmetric int8 on the calling thread, for a block that is one task of a parallel loop (a
// Winograd point's values in one tile row, see WinogradF2Int8): q = round(x * inv_scale) clamped
// to [-127, 127].
void quantize_symmetric(const float* x, int64_t n, float inv_scale, int8_t* q);

// An NHWC map as an int8 convolution reads it: `padding` pixels on every side, holding the
// zero point (the quantized 0.0), around the batch x height x width x channels image.
struct PaddedMap {
  int64_t batch, height, width, channels, padding;
  // For a map that is not stored (a convolution's upsampled input, see Conv2d::upsampled):
  // makes row y of an image (width x channels floats) into `scratch`; and the range of the
  // whole map, known without making it.
  std::function<void(int64_t image, int64_t y, float* scratch)> make_row;
  std::optional<Range> range;

  int64_t padded_height() const { return height + 2 * padding; }
  int64_t padded_width() const { return width + 2 * padding; }
  int64_t padded_elements() const { return batch * padded_height() * padded_width() * channels; }
};

// quantize_activations into that padded layout, from the stored map x or from made rows (x
// unused): the scale and zero point come from the image's range, the border gets the zero
// point. Made rows give the same values as the map they make, bit for bit.
ActivationQuantization quantize_activations_padded(const float* x, const PaddedMap& map, uint8_t* q);

// An int8 primitive's attributes: a runtime source zero point (unless the caller folds it into
// the bias, see SourceArguments), fixed per-channel output scales (the weight scales, on the
// channel dimension of the destination), then a binary multiply by a runtime scalar (the
// activation scale of the call), then a sum of the destination (residual) if asked. oneDNN 2.6
// has no runtime output scales for brgemm convolution or matmul, and a per-channel runtime
// multiply costs ~20 % of a matmul; a scalar multiply costs ~1 %.
dnnl::primitive_attr int8_attributes(const std::vector<float>& weight_scales, int channel_dim, int ndims,
                                     bool residual, bool source_zero_point = true);

// The runtime scalar of int8_attributes: a memory descriptor of ndims ones.
dnnl::memory::desc int8_scale_desc(int ndims);

// The argument ids of that scalar and of the zero point in the execute() map.
constexpr int kInt8ScaleArg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1;
constexpr int kInt8ZeroPointArg = DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC;

// The bias to pass an int8 primitive for one call: oneDNN 2.x adds the bias to the int32
// accumulator (of q - zero_point) before the output scales, so
// b[c] / (activation_scale * weight_scales[c]).
std::vector<float> int8_bias(const float* bias, const std::vector<float>& weight_scales, float activation_scale);

// What an int8 layer keeps for rescaling each call's result.
struct Int8Scaling {
  std::vector<float> weight_scales;  // per output channel
  std::vector<float> bias;           // the float32 bias, empty if the layer has none
  // Per output channel, the sum of its int8 weights: a convolution folds the source zero point
  // into its bias with it (see SourceArguments). Empty for a matmul.
  std::vector<int32_t> weight_sums;
};

// The sums of Int8Weights' values per output channel (for Int8Scaling::weight_sums).
std::vector<int32_t> weight_sums(const Int8Weights& weights);

// Weights `given` (any layout and float dtype) quantized per output channel: read as float32 in
// the order `plain`, whose outermost of `dims` are the `channels` output channels (oihw for a
// convolution, ba for a matmul's [in, out] weights).
Int8Weights quantize_weights(const dnnl::memory& given, const dnnl::memory::dims& dims, dnnl::memory::format_tag plain,
                             int64_t channels);

// The primitive a layer packs its weights for, make_pd() at the layer's `precision`: for INT8
// the weights are quantized first (`quantized`, and their scales in `int8`), the output scales
// being part of the primitive. Where oneDNN has no fast kernel at that precision (make_pd() is
// empty), the layer runs FP32 instead: a one-time note naming it, `precision` set to FP32 and
// the int8 state cleared. Empty when there is no FP32 kernel either.
template <class MakePd>
auto packing_pd_or_fp32(Precision& precision, const std::string& layer, const dnnl::memory& given,
                        const dnnl::memory::dims& dims, dnnl::memory::format_tag plain, int64_t channels,
                        Int8Scaling& int8, std::optional<Int8Weights>& quantized, MakePd make_pd) {
  if (precision == Precision::INT8) {
    quantized = quantize_weights(given, dims, plain, channels);
    int8.weight_scales = quantized->scales;
  }
  auto pd = make_pd();
  if (!pd && precision != Precision::FP32) {
    note_layer_fallback(precision, layer);
    precision = Precision::FP32;
    quantized.reset();
    int8 = {};
    pd = make_pd();
  }
  return pd;
}

// y[i] = x[i] rounded to bfloat16 (nearest even), on all threads.
void convert_to_bf16(const float* x, uint16_t* y, int64_t n);

// The source argument of one convolution / matmul call, made from its float32 input in the
// primitive's source type: used as is (fp32), converted by `convert` (bf16), or quantized here
// (int8, which also adds the call's bias, zero-point and activation-scale arguments). The
// converted data lives in the calling thread's kConvertedSource buffer, the int8 values in
// this object: keep it alive until the primitive has run.
//
// An int8 convolution passes `padded`: x is quantized into that padded layout, for a primitive
// without padding of its own, and the zero point goes into the bias,
// sum_i (q_i - zp) w_i = sum_i q_i w_i - zp * weight_sums, instead of into oneDNN's zero-point
// attribute. oneDNN 2.6's brgconv computes wrong results with a source zero point and padding
// at some shapes (e.g. 1920 -> 640 channels at 16x16, the SD UNet's up_blocks.2.resnets.0.conv1:
// relative error ~1e3), so int8 convolutions never use it.
class SourceArguments {
 public:
  // bias: the layer's float32 bias memory (empty handle if none; an int8 convolution must have
  // one); int8: set for INT8 only.
  SourceArguments(Precision precision, const float* x, int64_t elements, const dnnl::memory::desc& source_desc,
                  const ReorderStep* convert, const dnnl::memory& bias, const Int8Scaling* int8,
                  const PaddedMap* padded = nullptr);
  SourceArguments(const SourceArguments&) = delete;  // the memory objects point into this object
  SourceArguments& operator=(const SourceArguments&) = delete;
  void add_to(std::unordered_map<int, dnnl::memory>& args) const;

 private:
  dnnl::memory source_, bias_, scale_, zero_point_;
  std::vector<float> int8_bias_;
  ActivationQuantization quantization_;
};

}  // namespace lcmd::ops::detail
