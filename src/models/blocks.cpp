#include "models/blocks.h"

#include <cmath>

#include "core/error.h"

namespace lcmd {

Norm::Norm(const Weights& w, int channels) : weight(w.tensor("weight", {channels})), bias(w.tensor("bias", {channels})) {}

namespace {

// A layer built from weights stored in a packed model; a layout the file got wrong is a
// ModelError naming the file and the tensor.
template <class Build>
auto from_stored(const Weights& w, Build build) {
  try {
    return build();
  } catch (const std::invalid_argument& e) {
    throw ModelError(w.describe() + ": tensor '" + w.prefix() + "weight': " + e.what());
  }
}

}  // namespace

Precision conv_precision(Precision scope, int kernel) {
  // In an int8 scope the 1x1 convolutions run bf16. They are the resnets' conv_shortcut, which
  // in the UNet's up blocks read the raw concatenation of the up path and its skip connection,
  // whose magnitudes differ up to 8x (rms 0.9 against 7.5 in up_blocks.3 of the random
  // full-size model): one per-tensor scale leaves the smaller half a few levels. bf16 there
  // takes the full-size UNet's error from 2.67 % / 2.92 % to 2.13 % / 2.31 % (256 / 512;
  // bound 3 %), for 23M parameters and ~1.5 GMAC per step at 256.
  return scope == Precision::INT8 && kernel == 1 ? ops::runnable_precision(Precision::BF16) : scope;
}

ops::Conv2d load_conv(const Weights& w, int cin, int cout, int kernel, int stride, int padding, bool bias) {
  const Shape shape{cout, cin, kernel, kernel};
  const Precision precision = conv_precision(w.precision(), kernel);
  if (const auto stored = w.stored_layer("weight", shape)) {  // a packed model: used in place
    const Tensor b = bias ? w.tensor("bias", {cout}) : Tensor();
    return from_stored(w, [&] {
      return ops::Conv2d(*stored, bias ? b.data() : nullptr, cin, cout, kernel, stride, padding, precision,
                         w.conv3x3_algorithm());
    });
  }
  const Tensor weight = w.matrix("weight", shape);  // before the bias: random init bounds it by the weight
  const Tensor b = bias ? w.tensor("bias", {cout}) : Tensor();
  ops::Conv2d conv(weight.data(), bias ? b.data() : nullptr, cin, cout, kernel, stride, padding, precision,
                   w.conv3x3_algorithm());
  w.layer_built("weight", shape, conv.stored_weights());
  return conv;
}

ops::Linear load_linear(const Weights& w, int in, int out, bool bias, bool from_conv1x1) {
  const Shape shape = from_conv1x1 ? Shape{out, in, 1, 1} : Shape{out, in};
  // In an int8 scope the matrix products run int8 (per-tensor dynamic activation scales), except
  // a 1x1 convolution's (Transformer2DModel's proj_in / proj_out), which runs bf16 like
  // conv_shortcut: proj_out reads the transformer's residual stream, proj_in adds as much error.
  // Measured (UNet rel L2, full-size random model at 256 / golden UNet, worst case): bf16
  // products 2.13 % / 2.28 %; int8 but proj_in / proj_out 2.35 % / 2.46 %; all int8 2.93 % /
  // 3.04 %. The int8 products take the UNet step from ~350 to ~290 ms and ~230 MiB off the peak.
  const Precision p = from_conv1x1 ? conv_precision(w.precision(), 1) : w.precision();
  if (const auto stored = w.stored_layer("weight", shape)) {  // a packed model: used in place
    const Tensor b = bias ? w.tensor("bias", {out}) : Tensor();
    return from_stored(w, [&] { return ops::Linear(*stored, bias ? b.data() : nullptr, in, out, p); });
  }
  const Tensor weight = w.matrix("weight", shape);
  const Tensor b = bias ? w.tensor("bias", {out}) : Tensor();
  ops::Linear linear(weight.data(), bias ? b.data() : nullptr, in, out, p);
  w.layer_built("weight", shape, linear.stored_weights());
  return linear;
}

// ---- ResnetBlock2D ----

ResnetBlock2D::ResnetBlock2D(const Weights& w, int in_channels, int out_channels, int temb_channels, int groups,
                             float eps)
    : groups(groups),
      eps(eps),
      norm1(w["norm1"], in_channels),
      norm2(w["norm2"], out_channels),
      conv1(load_conv(w["conv1"], in_channels, out_channels, 3, 1, 1)),
      conv2(load_conv(w["conv2"], out_channels, out_channels, 3, 1, 1)) {
  if (temb_channels > 0) time_emb_proj = load_linear(w["time_emb_proj"], temb_channels, out_channels);
  if (in_channels != out_channels) conv_shortcut = load_conv(w["conv_shortcut"], in_channels, out_channels, 1, 1, 0);
}

Tensor ResnetBlock2D::forward(Tensor x, const Tensor* temb) const {
  // The convolutions normalise their own inputs (Conv2d::normalized): norm1's and norm2's
  // outputs are never stored whole where the kernel allows it. With a conv_shortcut, x is
  // needed only for it and for conv1: x can go (if the caller moved it in) once both have run.
  std::optional<Tensor> shortcut = conv_shortcut ? std::optional<Tensor>((*conv_shortcut)(x)) : std::nullopt;
  Tensor h = conv1.normalized(x, {groups, eps, norm1.weight.data(), norm1.bias.data(), /*silu=*/true});
  const bool changes_channels = shortcut.has_value();
  if (changes_channels) x = Tensor();
  if (time_emb_proj && temb) {
    // temb = time_emb_proj(silu(temb)), broadcast over every position of its sample.
    Tensor t = temb->clone();
    ops::silu_(t);
    const Tensor proj = (*time_emb_proj)(t);
    const int64_t n = h.dim(0), positions = h.numel() / (n * h.dim(-1)), c = h.dim(-1);
    for (int64_t b = 0; b < n; ++b) {
      float* hb = h.data() + b * positions * c;
      const float* pb = proj.data() + b * c;
#pragma omp parallel for
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t i = 0; i < c; ++i) hb[p * c + i] += pb[i];
    }
  }
  // (shortcut + conv2(norm2(h))) / output_scale_factor(1)
  // The residual is given up: conv2 adds into its storage where nothing else holds it.
  return conv2.normalized(h, {groups, eps, norm2.weight.data(), norm2.bias.data(), /*silu=*/true},
                          changes_channels ? std::move(*shortcut) : std::move(x));
}

// ---- Down / Upsample ----

Downsample2D::Downsample2D(const Weights& w, int channels) : conv(load_conv(w["conv"], channels, channels, 3, 2, 1)) {}

Upsample2D::Upsample2D(const Weights& w, int channels) : conv(load_conv(w["conv"], channels, channels, 3, 1, 1)) {}

namespace {

// F.interpolate(mode="nearest", size=(oh, ow)): source index floor(dst * in / out).
Tensor resize_nearest(const Tensor& x, int oh, int ow) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor y({n, oh, ow, c});
  const float sh = static_cast<float>(h) / oh, sw = static_cast<float>(w) / ow;
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t si = std::min<int64_t>(static_cast<int64_t>(std::floor(i * sh)), h - 1);
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t sj = std::min<int64_t>(static_cast<int64_t>(std::floor(j * sw)), w - 1);
        const float* src = x.data() + ((b * h + si) * w + sj) * c;
        std::copy(src, src + c, y.data() + ((b * oh + i) * ow + j) * c);
      }
    }
  return y;
}

}  // namespace

Tensor Upsample2D::forward(Tensor x, int out_h, int out_w) const {
  const bool doubled = out_h == 0 || (out_h == 2 * x.dim(1) && out_w == 2 * x.dim(2));
  if (doubled) return conv.upsampled(x);  // the 4x larger map is not stored where the kernel allows it
  const Tensor resized = resize_nearest(x, out_h, out_w);
  x = Tensor();
  return conv(resized);
}

// ---- Attention ----

ops::AttentionPrecision attention_precision(Precision p) {
  return p == Precision::FP32 ? ops::AttentionPrecision::FP32 : ops::AttentionPrecision::BF16;
}

Attention::Attention(const Weights& w, int query_dim, int context_dim, int heads, bool qkv_bias)
    : heads(heads),
      precision(attention_precision(w.precision())),
      to_q(load_linear(w["to_q"], query_dim, query_dim, qkv_bias)),
      to_k(load_linear(w["to_k"], context_dim, query_dim, qkv_bias)),
      to_v(load_linear(w["to_v"], context_dim, query_dim, qkv_bias)),
      to_out(load_linear(w["to_out"][0], query_dim, query_dim)) {}

Tensor Attention::forward(const Tensor& x, const Tensor* context, Tensor residual) const {
  const Tensor& kv_input = context ? *context : x;
  return to_out(ops::attention(to_q(x), to_k(kv_input), to_v(kv_input), heads, /*causal=*/false, precision),
                std::move(residual));
}

Tensor Attention::forward(const Tensor& x, const CrossAttentionKV& context_kv, Tensor residual) const {
  return to_out(ops::attention(to_q(x), context_kv.kv), std::move(residual));
}

CrossAttentionKV Attention::project_context(const Tensor& context) const {
  return {ops::PackedKV(to_k(context), to_v(context), heads, precision)};
}

// ---- BasicTransformerBlock ----

BasicTransformerBlock::BasicTransformerBlock(const Weights& w, int dim, int heads, int context_dim)
    : norm1(w["norm1"], dim),
      norm2(w["norm2"], dim),
      norm3(w["norm3"], dim),
      attn1(w["attn1"], dim, dim, heads, /*qkv_bias=*/false),
      attn2(w["attn2"], dim, context_dim, heads, /*qkv_bias=*/false),
      ff_proj(load_linear(w["ff"]["net"][0]["proj"], dim, 8 * dim)),
      ff_out(load_linear(w["ff"]["net"][2], 4 * dim, dim)) {}

Tensor BasicTransformerBlock::forward(Tensor x, const CrossAttentionKV& context_kv) const {
  constexpr float kLayerNormEps = 1e-5f;
  Tensor h = ops::layer_norm(x, kLayerNormEps, norm1.weight.data(), norm1.bias.data());
  Tensor out = attn1.forward(h, nullptr, std::move(x));
  h = ops::layer_norm(out, kLayerNormEps, norm2.weight.data(), norm2.bias.data());
  out = attn2.forward(h, context_kv, std::move(out));
  h = ops::layer_norm(out, kLayerNormEps, norm3.weight.data(), norm3.bias.data());
  return ff_out(ops::geglu(ff_proj(h)), std::move(out));
}

// ---- Transformer2DModel ----

Transformer2DModel::Transformer2DModel(const Weights& w, int channels, int heads, int context_dim, int layers,
                                       int groups)
    : groups(groups),
      norm(w["norm"], channels),
      proj_in(load_linear(w["proj_in"], channels, channels, true, /*from_conv1x1=*/true)),
      proj_out(load_linear(w["proj_out"], channels, channels, true, /*from_conv1x1=*/true)) {
  for (int i = 0; i < layers; ++i) transformer_blocks.emplace_back(w["transformer_blocks"][i], channels, heads, context_dim);
}

Tensor Transformer2DModel::forward(const Tensor& x, const CrossAttentionKV* context_kv) const {
  constexpr float kGroupNormEps = 1e-6f;
  const int64_t n = x.dim(0), c = x.dim(3);
  Tensor h = ops::group_norm(x, groups, kGroupNormEps, norm.weight.data(), norm.bias.data(), /*silu=*/false);
  h = proj_in(h).reshape({n, x.dim(1) * x.dim(2), c});  // NHWC is already [N, HW, C]
  for (const auto& block : transformer_blocks) h = block.forward(std::move(h), *context_kv++);
  return proj_out(h.reshape(x.shape()), &x);
}

}  // namespace lcmd
