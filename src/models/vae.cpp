#include "models/vae.h"

#include <utility>

namespace lcmd {

namespace {
constexpr float kVaeNormEps = 1e-6f;  // every GroupNorm in the VAE

// The decoder's bf16 3x3 convolutions run as Winograd F(2x2, 3x3): the decoder alone takes
// 0.94 s at 256x256 (`lcmd_taesd_bench --vae`), where direct bf16 takes 1.59 s and fp32
// Winograd 1.27 s. The Winograd error (4e-3 per layer) takes
// the bf16 mode's full-size image from 58.8 to 53.6 dB PSNR against fp32 (bound 35); real
// weights cannot make that worse the way they could for int8: bf16 keeps fp32's range. In the
// int8 mode they run as int8 Winograd (1.1-1.5x direct int8; image 46.3 -> 43.8 dB, bound 30).
Weights scope(const Weights& w) { return w.with_conv3x3_algorithm(ops::Conv3x3Algorithm::kWinograd); }
}

VaeMidBlock::VaeMidBlock(const Weights& w, int channels, int groups, bool add_attention) : groups(groups) {
  resnets.emplace_back(w["resnets"][0], channels, channels, 0, groups, kVaeNormEps);
  if (add_attention) {
    attention_norm.emplace(w["attentions"][0]["group_norm"], channels);
    attention.emplace(w["attentions"][0], channels, channels, /*heads=*/1, /*qkv_bias=*/true);
  }
  resnets.emplace_back(w["resnets"][1], channels, channels, 0, groups, kVaeNormEps);
}

Tensor VaeMidBlock::forward(const Tensor& x) const {
  Tensor h = resnets[0].forward(x, nullptr);
  if (attention) {
    // Attention over all positions with one head of width C, then the residual.
    const int64_t n = h.dim(0), c = h.dim(3), tokens = h.dim(1) * h.dim(2);
    const Tensor normed = ops::group_norm(h, groups, kVaeNormEps, attention_norm->weight.data(),
                                          attention_norm->bias.data(), /*silu=*/false);
    const Tensor seq = normed.reshape({n, tokens, c});
    const Shape shape = h.shape();
    Tensor residual = h.reshape({n, tokens, c});
    h = Tensor();  // residual holds the map alone: the output projection adds into it
    h = attention->forward(seq, nullptr, std::move(residual)).reshape(shape);
  }
  return resnets[1].forward(std::move(h), nullptr);
}

VaeDecoder::VaeDecoder(const VaeConfig& c, const Weights& w)
    : config_(c),
      post_quant_conv(load_conv(scope(w)["post_quant_conv"], c.latent_channels, c.latent_channels, 1, 1, 0)),
      conv_in(load_conv(scope(w)["decoder"]["conv_in"], c.latent_channels, c.block_out_channels.back(), 3, 1, 1)),
      mid_block(scope(w)["decoder"]["mid_block"], c.block_out_channels.back(), c.norm_num_groups,
                c.mid_block_add_attention),
      conv_norm_out(scope(w)["decoder"]["conv_norm_out"], c.block_out_channels[0]),
      conv_out(load_conv(scope(w)["decoder"]["conv_out"], c.block_out_channels[0], c.out_channels, 3, 1, 1)) {
  const int n = static_cast<int>(c.block_out_channels.size());
  std::vector<int> reversed(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  int output_channel = reversed[0];
  for (int i = 0; i < n; ++i) {
    const int prev_output_channel = output_channel;
    output_channel = reversed[i];
    const Weights bw = scope(w)["decoder"]["up_blocks"][i];
    UpDecoderBlock block;
    for (int j = 0; j < c.layers_per_block + 1; ++j)
      block.resnets.emplace_back(bw["resnets"][j], j == 0 ? prev_output_channel : output_channel, output_channel, 0,
                                 c.norm_num_groups, kVaeNormEps);
    if (i < n - 1) block.upsampler.emplace(bw["upsamplers"][0], output_channel);
    up_blocks.push_back(std::move(block));
  }
}

void VaeDecoder::record(const std::string& name, const Tensor& t) const {
  if (trace) trace->emplace_back(name, t.clone());
}

Tensor VaeDecoder::forward(const Tensor& latents) const {
  if (latents.rank() != 4 || latents.dim(3) != config_.latent_channels)
    throw std::invalid_argument("VAE latents must be NHWC with " + std::to_string(config_.latent_channels) +
                                " channels, got " + shape_str(latents.shape()));
  // Every upsampler makes the feature maps 4x larger. The tensor pool carries the UNet's and each
  // resolution's freed maps into the next (see release_heap_memory), so the peak is the highest
  // resolution's live maps; only glibc's heap (tensors under 1 MB) is trimmed, before and after
  // each upsampler.
  release_heap_memory();
  Tensor h = post_quant_conv(latents);
  record("post_quant_conv", h);
  h = conv_in(h);
  record("decoder.conv_in", h);
  h = mid_block.forward(h);
  record("decoder.mid_block", h);
  for (size_t i = 0; i < up_blocks.size(); ++i) {
    for (const auto& resnet : up_blocks[i].resnets) h = resnet.forward(std::move(h), nullptr);
    if (up_blocks[i].upsampler) {
      release_heap_memory();
      h = up_blocks[i].upsampler->forward(std::move(h));
      release_heap_memory();
    }
    record("decoder.up_blocks." + std::to_string(i), h);
  }
  h = ops::group_norm(h, config_.norm_num_groups, kVaeNormEps, conv_norm_out.weight.data(), conv_norm_out.bias.data(),
                      /*silu=*/true);
  h = conv_out(h);
  record("decoder.conv_out", h);
  release_heap_memory();  // the pool keeps the full-resolution maps: the next image's large tensors take them
  return h;
}

void declare_vae_encoder_parameters(const VaeConfig& c, const Weights& w) {
  const int n = static_cast<int>(c.block_out_channels.size());
  const Weights enc = w["encoder"];
  auto conv = [](const Weights& cw, int cin, int cout, int k) {
    cw.tensor("weight", {cout, cin, k, k});
    cw.tensor("bias", {cout});
  };
  auto norm = [](const Weights& nw, int ch) {
    nw.tensor("weight", {ch});
    nw.tensor("bias", {ch});
  };
  auto resnet = [&](const Weights& rw, int cin, int cout) {
    norm(rw["norm1"], cin);
    conv(rw["conv1"], cin, cout, 3);
    norm(rw["norm2"], cout);
    conv(rw["conv2"], cout, cout, 3);
    if (cin != cout) conv(rw["conv_shortcut"], cin, cout, 1);
  };
  conv(enc["conv_in"], c.in_channels, c.block_out_channels[0], 3);
  int output_channel = c.block_out_channels[0];
  for (int i = 0; i < n; ++i) {
    const int input_channel = output_channel;
    output_channel = c.block_out_channels[i];
    for (int j = 0; j < c.layers_per_block; ++j)
      resnet(enc["down_blocks"][i]["resnets"][j], j == 0 ? input_channel : output_channel, output_channel);
    if (i < n - 1) conv(enc["down_blocks"][i]["downsamplers"][0]["conv"], output_channel, output_channel, 3);
  }
  const int mid = c.block_out_channels.back();
  resnet(enc["mid_block"]["resnets"][0], mid, mid);
  if (c.mid_block_add_attention) {
    const Weights aw = enc["mid_block"]["attentions"][0];
    norm(aw["group_norm"], mid);
    for (const char* proj : {"to_q", "to_k", "to_v"}) {
      aw[proj].tensor("weight", {mid, mid});
      aw[proj].tensor("bias", {mid});
    }
    aw["to_out"][0].tensor("weight", {mid, mid});
    aw["to_out"][0].tensor("bias", {mid});
  }
  resnet(enc["mid_block"]["resnets"][1], mid, mid);
  norm(enc["conv_norm_out"], mid);
  conv(enc["conv_out"], mid, 2 * c.latent_channels, 3);  // double_z: mean and log-variance
  conv(w["quant_conv"], 2 * c.latent_channels, 2 * c.latent_channels, 1);
}

}  // namespace lcmd
