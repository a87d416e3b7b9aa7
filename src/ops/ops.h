// The op interface every model is written against. Activations are float32 NHWC (feature
// maps) or [N, T, C] (token sequences); see core/tensor.h. Convolutions and matrix products
// run on oneDNN; norms, attention and activations are hand-written and multithreaded with
// OpenMP. Every op has a naive reference in tests/ops.
#pragma once
#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/tensor.h"

namespace lcmd::ops {

// Threads used by oneDNN and the hand-written kernels (0 = all cores this process may use).
void set_num_threads(int n);
int num_threads();

// Sets flush-to-zero and denormals-are-zero (MXCSR FTZ|DAZ) on the calling thread and on
// every thread of its OpenMP team; set_num_threads re-applies it to a grown team. Denormal
// arithmetic is ~100x slower on x86 and only ever shows up as noise in these models.
void enable_flush_denormals();

// The precision Conv2d and Linear run at on this CPU when asked for `requested`: BF16 needs
// AVX512-BF16 and INT8 needs AVX512-VNNI or AVX-VNNI (as oneDNN reports the CPU, so
// ONEDNN_MAX_CPU_ISA lowers it); otherwise FP32. A layer asked for a precision the CPU lacks
// runs FP32 and a one-time note goes to stderr.
Precision runnable_precision(Precision requested);

// A layer's weights in the layout its kernel computes on, as a packed model file stores them
// (`lcmd pack`): oneDNN's blocked layout described as JSON text (dims, data type, padded dims,
// strides, inner blocks: portable across oneDNN versions) and the bytes, typically inside the
// file's read-only mapping.
struct StoredWeights {
  std::string layout;  // JSON; empty when the layer's weights cannot be stored this way (int8)
  const void* data = nullptr;
  size_t size = 0;
};

// How many layers built from StoredWeights used them in place, and how many had to re-lay them
// out (packed on another CPU or for another precision), since the process started.
struct StoredWeightsUse {
  int in_place = 0, relaid_out = 0;
};
StoredWeightsUse stored_weights_use();

// Stored weights back as float32 in PyTorch's layout `shape` (a conv's [cout, cin, k, k], a
// linear's [out, in] or [out, in, 1, 1]), e.g. to merge a LoRA into a packed model's weights.
// Winograd-transformed weights are transformed back: the bf16 rounding of the transformed sums
// stays in them (under 1e-2 relative L2 on random weights).
// std::invalid_argument when the layout does not describe weights of that shape.
Tensor unpack_stored_weights(const StoredWeights& weights, const Shape& shape);

// A GroupNorm's arguments (see group_norm), for a convolution that normalises its own input.
struct GroupNormArgs {
  int groups;
  float eps;
  const float* gamma;  // [C] or null (1)
  const float* beta;   // [C] or null (0)
  bool silu;           // x * sigmoid(x) after the affine
};

// The algorithms a BF16 or INT8 3x3 convolution may run. kDirect: oneDNN's direct convolution
// (bf16: 2.2e-3 relative error per layer; int8: 1.1-1.3e-2). kWinograd runs stride-1 layers as
// Winograd F(2x2, 3x3) (src/ops/winograd_impl.h), 16 products per 4 outputs instead of 36:
// in bf16 1.3-1.8x faster than direct from 16x16 outputs up (slower below), at about twice the
// error (4e-3 per layer); in int8 1.1x (128 channels) to 1.5x (256-512 channels) faster, at
// 1.9-2.0e-2 per layer. The model's accuracy budget must allow that: SD's VAE decoder, not its
// UNet (bf16: 1.04e-2 against the 1e-2 bound on the golden UNet; int8 has no room left either).
// Its transformed weights are all the layer keeps.
enum class Conv3x3Algorithm { kDirect, kWinograd };

// 2-D convolution with square kernel, symmetric zero padding. Weights are packed into the
// kernel's layout once, at construction; primitives are created once per input shape.
// Precision (see core/dtype.h): FP32 runs 3x3 stride-1 convolutions of 16-multiple channel
// counts as Winograd F(4x4, 3x3) (weights transformed per call, so no bigger copy is kept)
// when the output has at least 256 pixels and the transformed weights take at most 64 MB,
// where that is faster; other shapes run direct.
// BF16 and INT8 run direct or Winograd F(2x2, 3x3) (see Conv3x3Algorithm). INT8 layers with fewer than 16 input or output channels (SD's
// conv_in and conv_out) run BF16: int8 saves no time there and its error would land on the
// model's output. Every call is thread-safe.
class Conv2d {
 public:
  Conv2d();
  // weight: PyTorch layout [cout, cin, kernel, kernel]; bias: [cout] or nullptr.
  Conv2d(const float* weight, const float* bias, int cin, int cout, int kernel, int stride, int padding,
         Precision precision = Precision::FP32, Conv3x3Algorithm algorithm = Conv3x3Algorithm::kDirect);
  // From weights stored in a compute layout (see StoredWeights): used in place, without a copy,
  // when it is the layout this layer computes on here, otherwise re-laid out. The data must
  // outlive the layer. std::invalid_argument when the layout does not describe [cout, cin, k, k]
  // weights in `size` bytes.
  Conv2d(const StoredWeights& weights, const float* bias, int cin, int cout, int kernel, int stride, int padding,
         Precision precision, Conv3x3Algorithm algorithm = Conv3x3Algorithm::kDirect);
  // The weights as this layer computes on them, for a packed model (layout empty for int8). A
  // bf16 Winograd layer's are its transformed weights, dims [16, cin, cout].
  StoredWeights stored_weights() const;
  ~Conv2d();
  Conv2d(Conv2d&&) noexcept;
  Conv2d& operator=(Conv2d&&) noexcept;

  // x: [N, H, W, cin] -> [N, Ho, Wo, cout]. If residual is given (output shape), it is added.
  Tensor operator()(const Tensor& x, const Tensor* residual = nullptr) const;
  // The same, the residual given up by the caller: when it is its storage's sole owner (and
  // not x), a direct convolution accumulates into that storage and returns it, without the
  // copy and the new map the const overload needs. The same bits either way.
  Tensor operator()(const Tensor& x, Tensor&& residual) const;

  // conv(group_norm(x, norm)) and conv(upsample_nearest2x(x)), equal bit for bit to those
  // calls. On the Winograd paths the normalisation or the upsampling happens inside the layout
  // conversion the kernel needs anyway, and the int8 path upsamples inside its quantization, so
  // the intermediate map is never stored (the VAE decoder's largest are 64 MB at 256x256) and
  // is written and read once less; on the other paths the map is made first.
  Tensor normalized(const Tensor& x, const GroupNormArgs& norm, const Tensor* residual = nullptr) const;
  Tensor normalized(const Tensor& x, const GroupNormArgs& norm, Tensor&& residual) const;  // as operator()
  Tensor upsampled(const Tensor& x, const Tensor* residual = nullptr) const;

  int in_channels() const;
  int out_channels() const;
  // The precision the layer runs at: the requested one, or FP32 if this CPU lacks it (see
  // runnable_precision) or oneDNN has only its naive reference loops for it at this layer;
  // BF16 for a thin INT8 layer (see above).
  Precision precision() const;
  // The kernel an input of this shape runs on, e.g. "fp32 winograd jit_wino_4x3:avx512_core"
  // (creates and caches its primitive; throws like operator() for a shape it cannot take).
  std::string implementation(const Shape& input) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// y = x W^T + b over the last dimension, on oneDNN matmul at the given precision (see
// Conv2d). Every call is thread-safe.
class Linear {
 public:
  Linear();
  // weight: PyTorch layout [out, in]; bias: [out] or nullptr.
  Linear(const float* weight, const float* bias, int in, int out, Precision precision = Precision::FP32);
  // As the Conv2d constructor from StoredWeights ([out, in] weights).
  Linear(const StoredWeights& weights, const float* bias, int in, int out, Precision precision);
  StoredWeights stored_weights() const;  // as Conv2d::stored_weights
  ~Linear();
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;

  // x: [..., in] -> [..., out]. If residual is given (output shape), it is added.
  Tensor operator()(const Tensor& x, const Tensor* residual = nullptr) const;
  // The same, accumulating into the residual's storage when the caller gives it up and it is
  // its sole owner (and not x), as Conv2d's overload. The same bits either way.
  Tensor operator()(const Tensor& x, Tensor&& residual) const;

  int in_features() const;
  int out_features() const;
  // As Conv2d::precision and Conv2d::implementation (for an input of `rows` rows).
  Precision precision() const;
  std::string implementation(int64_t rows) const;

 private:
  // y = x W^T + b (+ residual), into accumulate's storage when given (it is the residual).
  Tensor run(const Tensor& x, const Tensor* residual, Tensor* accumulate) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// GroupNorm over channels-last x: [N, ..., C] (statistics per sample and group over all
// positions), affine gamma/beta [C]. silu=true applies x*sigmoid(x) after the affine.
// Statistics are accumulated in double; a null gamma/beta means 1/0.
Tensor group_norm(const Tensor& x, int groups, float eps, const float* gamma, const float* beta, bool silu);

// LayerNorm over the last dimension, affine gamma/beta [C] (null means 1/0).
Tensor layer_norm(const Tensor& x, float eps, const float* gamma, const float* beta);

// softmax(q k^T / sqrt(d)) v per head. Heads are interleaved in the channel dimension as
// PyTorch lays them out: q [B, Sq, H*d], k and v [B, Sk, H*d] -> [B, Sq, H*d].
// causal: position i attends to j <= i only (CLIP's text encoder).
// Queries are processed in blocks, so the full [H, Sq, Sk] score matrix never exists.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal);

// In-place activations.
void silu_(Tensor& x);        // x * sigmoid(x)
void gelu_erf_(Tensor& x);    // 0.5 x (1 + erf(x / sqrt 2))
void quick_gelu_(Tensor& x);  // x * sigmoid(1.702 x)

// GEGLU gate: x [..., 2F] -> x[..., :F] * gelu_erf(x[..., F:]) : [..., F].
Tensor geglu(const Tensor& x);

// Nearest-neighbour 2x upsampling of NHWC: [N, H, W, C] -> [N, 2H, 2W, C].
Tensor upsample_nearest2x(const Tensor& x);

// a + b (same shape), and a += b.
Tensor add(const Tensor& a, const Tensor& b);
void add_(Tensor& a, const Tensor& b);

// Concatenation of NHWC tensors along channels: [N,H,W,Ca] ++ [N,H,W,Cb] -> [N,H,W,Ca+Cb].
Tensor concat_channels(const Tensor& a, const Tensor& b);

// ---- Attention: precision and pre-packed keys/values ----

// Arithmetic of attention(). BF16 rounds q, k, v and the softmax weights to bfloat16 and
// accumulates in float32 (vdpbf16ps): 1.6-2x the fp32 speed, 2-5e-3 relative error.
// On a CPU without AVX512_BF16, BF16 computes in fp32 (exact, and no slower there).
enum class AttentionPrecision { FP32, BF16 };

// attention() above computed with the given arithmetic.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal,
                 AttentionPrecision precision);

namespace detail {
struct PackedKVData;
}

// K and V packed once into the attention kernel's per-head layout, for keys and values that
// many calls share (the UNet's cross-attention K/V of the text embedding are the same at
// every denoising step). Immutable; copies share the packed data.
class PackedKV {
 public:
  PackedKV() = default;
  // k, v: [B, Sk, H*d] with heads interleaved as in attention().
  PackedKV(const Tensor& k, const Tensor& v, int heads, AttentionPrecision precision = AttentionPrecision::FP32);
  explicit PackedKV(std::shared_ptr<const detail::PackedKVData> data);  // for the kernel code

  bool empty() const { return !data_; }
  int64_t batch() const;
  int64_t keys() const;
  int64_t channels() const;
  int heads() const;
  const char* kernel_name() const;  // see attention_kernel_name()
  const detail::PackedKVData* data() const { return data_.get(); }

 private:
  std::shared_ptr<const detail::PackedKVData> data_;
};

// attention(q, k, v, heads, causal, precision) with the k, v, heads and precision of the pack;
// the same result as the unpacked call. q: [B, Sq, H*d] with the pack's B and H*d.
Tensor attention(const Tensor& q, const PackedKV& kv, bool causal = false);

// The attention kernel this CPU runs for a precision: "avx512-bf16", "avx512", "avx2" or
// "portable" (for --verbose and `lcmd info`).
const char* attention_kernel_name(AttentionPrecision precision);

}  // namespace lcmd::ops

// ---- Extra activations (activations_extra.cpp) ----
namespace lcmd::ops {

// In-place max(x, 0) as torch.relu: NaN stays NaN. (TAESD's decoder.)
void relu_(Tensor& x);

}  // namespace lcmd::ops
