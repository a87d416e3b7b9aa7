// The op interface every model is written against. Activations are float32 NHWC (feature
// maps) or [N, T, C] (token sequences); see core/tensor.h. Convolutions and matrix products
// run on oneDNN; norms, attention and activations are hand-written and multithreaded with
// OpenMP. Every op has a naive reference in tests/ops.
#pragma once
#include <memory>

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

// 2-D convolution with square kernel, symmetric zero padding. Weights are packed into the
// kernel's layout once, at construction; primitives are created once per input shape.
class Conv2d {
 public:
  Conv2d();
  // weight: PyTorch layout [cout, cin, kernel, kernel]; bias: [cout] or nullptr.
  Conv2d(const float* weight, const float* bias, int cin, int cout, int kernel, int stride, int padding,
         Precision precision = Precision::FP32);
  ~Conv2d();
  Conv2d(Conv2d&&) noexcept;
  Conv2d& operator=(Conv2d&&) noexcept;

  // x: [N, H, W, cin] -> [N, Ho, Wo, cout]. If residual is given (output shape), it is added.
  Tensor operator()(const Tensor& x, const Tensor* residual = nullptr) const;

  int in_channels() const;
  int out_channels() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// y = x W^T + b over the last dimension.
class Linear {
 public:
  Linear();
  // weight: PyTorch layout [out, in]; bias: [out] or nullptr.
  Linear(const float* weight, const float* bias, int in, int out, Precision precision = Precision::FP32);
  ~Linear();
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;

  // x: [..., in] -> [..., out]. If residual is given (output shape), it is added.
  Tensor operator()(const Tensor& x, const Tensor* residual = nullptr) const;

  int in_features() const;
  int out_features() const;

 private:
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

}  // namespace lcmd::ops
