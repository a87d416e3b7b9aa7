// TAESD, the tiny autoencoder by madebyollin, as diffusers' AutoencoderTiny runs its decoding
// half (diffusers/models/autoencoder_tiny.py, vae.py DecoderTiny, unet_2d_blocks.py
// AutoencoderTinyBlock). It replaces the KL VAE decoder for a fraction of the cost:
//   x = tanh(z / 3) * 3                          (a soft clamp; the 3 is hard-coded)
//   decoder.layers:  conv3x3(latent -> C, bias), ReLU, Blocks,
//                    then per further stage: nearest x2, conv3x3(C -> C, no bias), Blocks,
//                    then conv3x3(C -> out, bias)
//   decode(z).sample = layers(x) * 2 - 1        (unclamped)
// with Block(x) = ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x), 3x3 convs with bias.
// There is no post_quant_conv, GroupNorm or attention, and scaling_factor is 1.0.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "models/weights.h"
#include "ops/ops.h"

namespace lcmd {

// AutoencoderTiny's config.json. Accepts every key diffusers (0.24 and later) and madebyollin's
// shipped file write; the encoder-side ones (in_channels, encoder_block_out_channels,
// num_encoder_blocks, latent_magnitude, latent_shift, force_upcast) are type-checked and
// otherwise unused. Refused with a ModelError naming the field: act_fn other than relu,
// upsample_fn other than nearest, upsampling_scaling_factor other than 2, a nonzero
// shift_factor, decoder stages of unequal width (DecoderTiny joins stages without a
// projection), and a stage count other than 4 (the pipeline's latents are 1/8 of the image).
struct TaesdConfig {
  int latent_channels = 4;
  int out_channels = 3;
  std::vector<int> decoder_block_out_channels{64, 64, 64, 64};  // one width per stage, all equal
  std::vector<int> num_decoder_blocks{3, 3, 3, 1};              // AutoencoderTinyBlocks per stage
  float scaling_factor = 1.0f;  // the pipeline decodes denoised / scaling_factor

  // The decoder's width (every stage has the same one).
  int channels() const { return decoder_block_out_channels.front(); }

  // The defaults above are madebyollin/taesd's values (and diffusers 0.24's defaults).
  static TaesdConfig from_json(const nlohmann::json& j, const std::string& source);
};

// unet_2d_blocks.AutoencoderTinyBlock with equal in/out widths (skip = Identity):
// ReLU(conv.4(ReLU(conv.2(ReLU(conv.0(x))))) + x).
struct AutoencoderTinyBlock {
  AutoencoderTinyBlock(const Weights& w, int channels);  // w: the block's scope (holds conv.0/2/4)
  Tensor forward(const Tensor& x) const;

  ops::Conv2d conv0, conv2, conv4;
};

class TaesdDecoder {
 public:
  // w: the root scope of the AutoencoderTiny file (holds decoder.layers.*); its precision is
  // the precision every convolution runs at.
  TaesdDecoder(const TaesdConfig& config, const Weights& w);

  // latents: NHWC [N, h, w, latent_channels] exactly as the pipeline hands them (denoised /
  // scaling_factor, which is 1.0 for TAESD). Returns NHWC [N, 8h, 8w, out_channels]: the
  // diffusers `decode(latents).sample`, in about [-1, 1] but not clamped.
  Tensor forward(const Tensor& latents) const;

  const TaesdConfig& config() const { return config_; }

  // When set, forward appends copies of the intermediates by diffusers module name:
  // "decoder.clamped_input" (the input of decoder.layers, which has no module of its own) and
  // "decoder.layers.N" for every N.
  mutable std::vector<std::pair<std::string, Tensor>>* trace = nullptr;

 private:
  struct Relu {};
  struct NearestUpsample2x {};
  // One entry of the nn.Sequential decoder.layers, at its index.
  using Layer = std::variant<ops::Conv2d, Relu, NearestUpsample2x, AutoencoderTinyBlock>;

  static Tensor run(const Layer& layer, Tensor x);
  void record(const std::string& name, const Tensor& t) const;

  TaesdConfig config_;
  std::vector<Layer> layers_;
};

// madebyollin's original taesd_decoder.safetensors (converted from taesd_decoder.pth) holds the
// decoder's nn.Sequential on its own: the same tensors without the "decoder.layers." prefix, at
// index N+1, because that Sequential starts with the weightless Clamp module. This source serves
// such a file under the diffusers names TaesdDecoder asks for.
class OriginalTaesdDecoderSource : public WeightSource {
 public:
  explicit OriginalTaesdDecoderSource(std::unique_ptr<const WeightSource> original);
  bool contains(const std::string& name) const override;
  // Throws ModelError naming both spellings when the original file lacks the tensor, and for a
  // name outside decoder.layers (the file holds nothing else).
  Tensor load(const std::string& name, const Shape& shape) const override;
  std::string describe() const override;

  // "decoder.layers.2.conv.0.weight" -> "3.conv.0.weight"; empty for names outside
  // decoder.layers.
  static std::string original_name(const std::string& diffusers_name);

 private:
  std::unique_ptr<const WeightSource> original_;
};

// True when `source` is laid out like madebyollin's original decoder file (a "1.weight" and no
// "decoder.layers.0.weight"), so it must be wrapped in OriginalTaesdDecoderSource.
bool has_original_taesd_decoder_names(const WeightSource& source);

}  // namespace lcmd
