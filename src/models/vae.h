// AutoencoderKL's decoding half (diffusers/models/autoencoder_kl.py, vae.py Decoder):
// post_quant_conv, then the Decoder. The encoder is not used for text-to-image; its parameter
// names are declared so a random model folder holds the whole AutoencoderKL.
#pragma once
#include <optional>
#include <vector>

#include "models/blocks.h"
#include "models/config.h"

namespace lcmd {

// UNetMidBlock2D as the VAE uses it: resnets.0, attentions.0 (one head, GroupNorm, residual), resnets.1.
struct VaeMidBlock {
  VaeMidBlock(const Weights& w, int channels, int groups, bool add_attention);
  Tensor forward(const Tensor& x) const;

  int groups;
  std::vector<ResnetBlock2D> resnets;
  std::optional<Norm> attention_norm;        // attentions.0.group_norm
  std::optional<Attention> attention;        // attentions.0 (to_q/k/v with bias)
};

// UpDecoderBlock2D.
struct UpDecoderBlock {
  std::vector<ResnetBlock2D> resnets;
  std::optional<Upsample2D> upsampler;
};

class VaeDecoder {
 public:
  // w: the AutoencoderKL's root scope (holds post_quant_conv and decoder.*).
  VaeDecoder(const VaeConfig& config, const Weights& w);

  // latents: NHWC [N, h, w, latent_channels], already divided by scaling_factor.
  // Returns NHWC [N, 8h, 8w, out_channels] in about [-1, 1].
  Tensor forward(const Tensor& latents) const;

  mutable std::vector<std::pair<std::string, Tensor>>* trace = nullptr;
  const VaeConfig& config() const { return config_; }

 private:
  void record(const std::string& name, const Tensor& t) const;

  VaeConfig config_;
  ops::Conv2d post_quant_conv;
  ops::Conv2d conv_in;
  VaeMidBlock mid_block;
  std::vector<UpDecoderBlock> up_blocks;
  Norm conv_norm_out;
  ops::Conv2d conv_out;
};

// Requests every parameter of the VAE encoder and quant_conv from `w` (the AutoencoderKL root),
// with its shape; used to write complete random model folders.
void declare_vae_encoder_parameters(const VaeConfig& config, const Weights& w);

}  // namespace lcmd
