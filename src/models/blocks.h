// The building blocks diffusers shares between the UNet and the VAE, one struct per PyTorch
// module (diffusers/models/resnet.py, attention.py, attention_processor.py, transformer_2d.py).
// Each constructor reads its parameters from its own Weights scope, named as in diffusers.
// Feature maps are NHWC; token sequences [N, T, C].
#pragma once
#include <optional>

#include "models/weights.h"
#include "ops/ops.h"

namespace lcmd {

// nn.GroupNorm / nn.LayerNorm parameters ("weight", "bias").
struct Norm {
  Norm() = default;
  Norm(const Weights& w, int channels);
  Tensor weight, bias;
};

// The precision a convolution of this kernel size runs at in a scope of that precision: the
// scope's, except 1x1 convolutions in an int8 scope, which run bf16 (see blocks.cpp).
Precision conv_precision(Precision scope, int kernel);
// nn.Conv2d read from "weight"/"bias", at conv_precision.
ops::Conv2d load_conv(const Weights& w, int cin, int cout, int kernel, int stride, int padding, bool bias = true);
// nn.Linear read from "weight"/"bias"; a 1x1 nn.Conv2d on NHWC is the same product.
ops::Linear load_linear(const Weights& w, int in, int out, bool bias = true, bool from_conv1x1 = false);

// ResnetBlock2D (resnet_time_scale_shift "default", output_scale_factor 1).
struct ResnetBlock2D {
  ResnetBlock2D(const Weights& w, int in_channels, int out_channels, int temb_channels, int groups, float eps);
  // x NHWC; temb [N, temb_channels] or nullptr when temb_channels == 0. x is taken by value:
  // when the caller moves it in and the block has a conv_shortcut, it is freed once the
  // shortcut and the first GroupNorm have read it.
  Tensor forward(Tensor x, const Tensor* temb) const;

  int groups;
  float eps;
  Norm norm1, norm2;
  ops::Conv2d conv1, conv2;
  std::optional<ops::Linear> time_emb_proj;
  std::optional<ops::Conv2d> conv_shortcut;  // 1x1, only when in != out
};

// Downsample2D: 3x3 conv, stride 2, padding 1.
struct Downsample2D {
  Downsample2D(const Weights& w, int channels);
  Tensor forward(const Tensor& x) const { return conv(x); }
  ops::Conv2d conv;
};

// Upsample2D: nearest 2x (or to the skip connection's size), then a 3x3 conv.
struct Upsample2D {
  Upsample2D(const Weights& w, int channels);
  // A 2x upsampling is done by the convolution as it reads x (Conv2d::upsampled). For another
  // size, x is taken by value: when the caller moves it in, it is freed once resized, before the
  // convolution allocates its output.
  Tensor forward(Tensor x, int out_h = 0, int out_w = 0) const;
  ops::Conv2d conv;
};

// A cross-attention's keys and values of a fixed context (the text embedding): the same for
// every denoising step, so they are computed once per image.
struct CrossAttentionKV {
  ops::PackedKV kv;  // K and V [N, S, query_dim], packed for the attention kernel
};

// Attention arithmetic for a scope's precision: bf16 dot products whenever the scope's matrix
// products are not fp32.
ops::AttentionPrecision attention_precision(Precision p);

// attention_processor.Attention: to_q/to_k/to_v/to_out.0, heads interleaved in channels.
struct Attention {
  Attention(const Weights& w, int query_dim, int context_dim, int heads, bool qkv_bias);
  // x [N, T, query_dim]; context [N, S, context_dim] or nullptr for self-attention.
  // residual (x's shape) is added to the output projection, into its storage if no other
  // tensor shares it (ops::Linear's residual overload).
  Tensor forward(const Tensor& x, const Tensor* context, Tensor residual) const;
  // Cross-attention with keys and values from project_context.
  Tensor forward(const Tensor& x, const CrossAttentionKV& kv, Tensor residual) const;
  CrossAttentionKV project_context(const Tensor& context) const;

  int heads;
  ops::AttentionPrecision precision;
  ops::Linear to_q, to_k, to_v, to_out;
};

// BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm
// with a residual.
struct BasicTransformerBlock {
  BasicTransformerBlock(const Weights& w, int dim, int heads, int context_dim);
  // context_kv: attn2's keys and values of the text embedding (attn2.project_context).
  // x is the residual stream: the block adds to its storage when the caller gives it up.
  Tensor forward(Tensor x, const CrossAttentionKV& context_kv) const;

  Norm norm1, norm2, norm3;
  Attention attn1, attn2;
  ops::Linear ff_proj, ff_out;  // ff.net.0.proj (dim -> 8 dim, GEGLU) and ff.net.2
};

// Transformer2DModel with use_linear_projection=false: GroupNorm(eps 1e-6), 1x1 proj_in, blocks,
// 1x1 proj_out, residual.
struct Transformer2DModel {
  Transformer2DModel(const Weights& w, int channels, int heads, int context_dim, int layers, int groups);
  // context_kv: one CrossAttentionKV per transformer block, in order.
  Tensor forward(const Tensor& x, const CrossAttentionKV* context_kv) const;

  int groups;
  Norm norm;
  ops::Linear proj_in, proj_out;
  std::vector<BasicTransformerBlock> transformer_blocks;
};

}  // namespace lcmd
