// UNet2DConditionModel (diffusers/models/unet_2d_condition.py) with the LCM guidance
// embedding (time_embedding.cond_proj). Members mirror the module tree and its weight names.
#pragma once
#include <optional>
#include <vector>

#include "models/blocks.h"
#include "models/config.h"

namespace lcmd {

// TimestepEmbedding: linear_1 -> SiLU -> linear_2, with the optional cond_proj added to its input.
struct TimestepEmbedding {
  TimestepEmbedding(const Weights& w, int in_channels, int time_embed_dim, std::optional<int> cond_proj_dim);
  // sample [N, in_channels]; condition [N, cond_proj_dim] or nullptr.
  Tensor forward(const Tensor& sample, const Tensor* condition) const;

  std::optional<ops::Linear> cond_proj;  // no bias
  ops::Linear linear_1, linear_2;
};

// CrossAttnDownBlock2D / DownBlock2D (attentions empty).
struct DownBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Downsample2D> downsampler;  // downsamplers.0
};

// CrossAttnUpBlock2D / UpBlock2D (attentions empty).
struct UpBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Upsample2D> upsampler;  // upsamplers.0
};

// UNetMidBlock2DCrossAttn: resnets.0, then (attentions.i, resnets.i+1) pairs.
struct MidBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
};

// The text conditioning of one image, prepared once for all its denoising steps: the keys and
// values of every cross-attention (in module order).
struct UNetContext {
  std::vector<CrossAttentionKV> cross_attention_kv;
};

class UNet2DConditionModel {
 public:
  UNet2DConditionModel(const UNetConfig& config, const Weights& w);

  // encoder_hidden_states [N, S, cross_attention_dim] -> every attn2's K and V.
  UNetContext prepare_context(const Tensor& encoder_hidden_states) const;

  // As below, with the context prepared once by prepare_context.
  Tensor forward(const Tensor& sample, int timestep, const UNetContext& context, const Tensor* timestep_cond) const;

  // sample: NHWC [N, h, w, in_channels]; encoder_hidden_states [N, S, cross_attention_dim];
  // timestep_cond: [N, time_cond_proj_dim] (LCM's guidance embedding) or nullptr when the
  // model has no cond_proj. Returns the epsilon prediction, NHWC [N, h, w, out_channels].
  Tensor forward(const Tensor& sample, int timestep, const Tensor& encoder_hidden_states,
                 const Tensor* timestep_cond) const;

  // Intermediate outputs by diffusers module name (e.g. "down_blocks.1", "mid_block"), filled
  // by forward when set: for parity tests against the reference's forward hooks.
  mutable std::vector<std::pair<std::string, Tensor>>* trace = nullptr;

  const UNetConfig& config() const { return config_; }

 private:
  void record(const std::string& name, const Tensor& t) const;

  UNetConfig config_;
  TimestepEmbedding time_embedding;
  ops::Conv2d conv_in;
  std::vector<DownBlock> down_blocks;
  MidBlock mid_block;
  std::vector<UpBlock> up_blocks;
  Norm conv_norm_out;
  ops::Conv2d conv_out;
};

}  // namespace lcmd
