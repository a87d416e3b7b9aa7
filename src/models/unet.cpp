#include "models/unet.h"

#include "core/error.h"
#include "sched/embeddings.h"

namespace lcmd {

TimestepEmbedding::TimestepEmbedding(const Weights& w, int in_channels, int time_embed_dim,
                                     std::optional<int> cond_proj_dim)
    : linear_1(load_linear(w["linear_1"], in_channels, time_embed_dim)),
      linear_2(load_linear(w["linear_2"], time_embed_dim, time_embed_dim)) {
  if (cond_proj_dim) cond_proj = load_linear(w["cond_proj"], *cond_proj_dim, in_channels, /*bias=*/false);
}

Tensor TimestepEmbedding::forward(const Tensor& sample, const Tensor* condition) const {
  Tensor h = cond_proj && condition ? (*cond_proj)(*condition, &sample) : sample;  // sample + cond_proj(condition)
  h = linear_1(h);
  ops::silu_(h);
  return linear_2(h);
}

UNet2DConditionModel::UNet2DConditionModel(const UNetConfig& c, const Weights& w)
    : config_(c),
      time_embedding(w["time_embedding"], c.block_out_channels[0], c.time_embedding_dim, c.time_cond_proj_dim),
      conv_in(load_conv(w["conv_in"], c.in_channels, c.block_out_channels[0], c.conv_in_kernel, 1,
                        c.conv_in_kernel / 2)),
      conv_norm_out(w["conv_norm_out"], c.block_out_channels[0]),
      conv_out(load_conv(w["conv_out"], c.block_out_channels[0], c.out_channels, c.conv_out_kernel, 1,
                         c.conv_out_kernel / 2)) {
  const int n = static_cast<int>(c.block_out_channels.size());
  const int temb = c.time_embedding_dim, groups = c.norm_num_groups, ctx = c.cross_attention_dim;
  const float eps = c.norm_eps;

  int output_channel = c.block_out_channels[0];
  for (int i = 0; i < n; ++i) {
    const int input_channel = output_channel;
    output_channel = c.block_out_channels[i];
    const Weights bw = w["down_blocks"][i];
    DownBlock block;
    const bool cross_attn = c.down_block_types[i] == "CrossAttnDownBlock2D";
    for (int j = 0; j < c.layers_per_block[i]; ++j) {
      block.resnets.emplace_back(bw["resnets"][j], j == 0 ? input_channel : output_channel, output_channel, temb,
                                 groups, eps);
      if (cross_attn)
        block.attentions.emplace_back(bw["attentions"][j], output_channel, c.num_attention_heads[i], ctx,
                                      c.transformer_layers_per_block[i], groups);
    }
    if (i < n - 1) block.downsampler.emplace(bw["downsamplers"][0], output_channel);
    down_blocks.push_back(std::move(block));
  }

  const int mid_channels = c.block_out_channels.back();
  const Weights mw = w["mid_block"];
  mid_block.resnets.emplace_back(mw["resnets"][0], mid_channels, mid_channels, temb, groups, eps);
  mid_block.attentions.emplace_back(mw["attentions"][0], mid_channels, c.num_attention_heads.back(), ctx,
                                    c.transformer_layers_per_block.back(), groups);
  mid_block.resnets.emplace_back(mw["resnets"][1], mid_channels, mid_channels, temb, groups, eps);

  // Up blocks walk the widths in reverse; each resnet takes the previous output concatenated
  // with the matching skip connection from the down path.
  std::vector<int> reversed(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  std::vector<int> reversed_heads(c.num_attention_heads.rbegin(), c.num_attention_heads.rend());
  std::vector<int> reversed_layers(c.layers_per_block.rbegin(), c.layers_per_block.rend());
  std::vector<int> reversed_tlayers(c.transformer_layers_per_block.rbegin(), c.transformer_layers_per_block.rend());
  output_channel = reversed[0];
  for (int i = 0; i < n; ++i) {
    const int prev_output_channel = output_channel;
    output_channel = reversed[i];
    const int input_channel = reversed[std::min(i + 1, n - 1)];
    const int num_layers = reversed_layers[i] + 1;
    const Weights bw = w["up_blocks"][i];
    UpBlock block;
    const bool cross_attn = c.up_block_types[i] == "CrossAttnUpBlock2D";
    for (int j = 0; j < num_layers; ++j) {
      const int skip_channels = j == num_layers - 1 ? input_channel : output_channel;
      const int resnet_in = j == 0 ? prev_output_channel : output_channel;
      block.resnets.emplace_back(bw["resnets"][j], resnet_in + skip_channels, output_channel, temb, groups, eps);
      if (cross_attn)
        block.attentions.emplace_back(bw["attentions"][j], output_channel, reversed_heads[i], ctx, reversed_tlayers[i],
                                      groups);
    }
    if (i < n - 1) block.upsampler.emplace(bw["upsamplers"][0], output_channel);
    up_blocks.push_back(std::move(block));
  }
}

void UNet2DConditionModel::record(const std::string& name, const Tensor& t) const {
  if (trace) trace->emplace_back(name, t.clone());
}

namespace {

// Every Transformer2DModel of the UNet in forward order.
template <typename Fn>
void for_each_transformer(const std::vector<DownBlock>& down, const MidBlock& mid, const std::vector<UpBlock>& up,
                          Fn fn) {
  for (const auto& b : down)
    for (const auto& t : b.attentions) fn(t);
  for (const auto& t : mid.attentions) fn(t);
  for (const auto& b : up)
    for (const auto& t : b.attentions) fn(t);
}

}  // namespace

UNetContext UNet2DConditionModel::prepare_context(const Tensor& context) const {
  const auto& c = config_;
  if (context.rank() != 3 || context.dim(2) != c.cross_attention_dim)
    throw std::invalid_argument("UNet encoder_hidden_states must be [N, S, " + std::to_string(c.cross_attention_dim) +
                                "], got " + shape_str(context.shape()));
  UNetContext out;
  for_each_transformer(down_blocks, mid_block, up_blocks, [&](const Transformer2DModel& t) {
    for (const auto& block : t.transformer_blocks) out.cross_attention_kv.push_back(block.attn2.project_context(context));
  });
  return out;
}

Tensor UNet2DConditionModel::forward(const Tensor& sample, int timestep, const Tensor& encoder_hidden_states,
                                     const Tensor* timestep_cond) const {
  return forward(sample, timestep, prepare_context(encoder_hidden_states), timestep_cond);
}

Tensor UNet2DConditionModel::forward(const Tensor& sample, int timestep, const UNetContext& context,
                                     const Tensor* timestep_cond) const {
  const auto& c = config_;
  const int64_t batch = sample.dim(0);
  if (sample.rank() != 4 || sample.dim(3) != c.in_channels)
    throw std::invalid_argument("UNet sample must be NHWC with " + std::to_string(c.in_channels) + " channels, got " +
                                shape_str(sample.shape()));
  if (context.cross_attention_kv.empty() || context.cross_attention_kv[0].kv.batch() != batch)
    throw std::invalid_argument("UNet context was prepared for another batch size");
  const CrossAttentionKV* kv = context.cross_attention_kv.data();
  auto next_kv = [&](const Transformer2DModel& t) {
    const CrossAttentionKV* mine = kv;
    kv += t.transformer_blocks.size();
    return mine;
  };
  if (c.time_cond_proj_dim && !timestep_cond)
    throw std::invalid_argument("this UNet has time_cond_proj_dim and needs a guidance embedding");

  // 1. time: sinusoidal projection (float32 as torch), then the embedding MLP.
  const int proj_dim = c.block_out_channels[0];
  const std::vector<float> t_proj = timestep_embedding(timestep, proj_dim, c.flip_sin_to_cos, c.freq_shift);
  Tensor t_emb({batch, proj_dim});
  for (int64_t b = 0; b < batch; ++b) std::copy(t_proj.begin(), t_proj.end(), t_emb.data() + b * proj_dim);
  record("time_proj", t_emb);
  const Tensor emb = time_embedding.forward(t_emb, timestep_cond);
  record("time_embedding", emb);

  // 2. down path, keeping every intermediate as a skip connection.
  Tensor h = conv_in(sample);
  record("conv_in", h);
  std::vector<Tensor> skips{h};
  for (size_t i = 0; i < down_blocks.size(); ++i) {
    const DownBlock& block = down_blocks[i];
    for (size_t j = 0; j < block.resnets.size(); ++j) {
      h = block.resnets[j].forward(h, &emb);
      if (!block.attentions.empty()) h = block.attentions[j].forward(h, next_kv(block.attentions[j]));
      skips.push_back(h);
    }
    if (block.downsampler) {
      h = block.downsampler->forward(h);
      skips.push_back(h);
    }
    record("down_blocks." + std::to_string(i), h);
  }

  // 3. mid block.
  h = mid_block.resnets[0].forward(std::move(h), &emb);
  for (size_t j = 0; j < mid_block.attentions.size(); ++j) {
    h = mid_block.attentions[j].forward(h, next_kv(mid_block.attentions[j]));
    h = mid_block.resnets[j + 1].forward(std::move(h), &emb);
  }
  record("mid_block", h);

  // 4. up path: each resnet eats the latest skip; upsample to the next skip's size.
  for (size_t i = 0; i < up_blocks.size(); ++i) {
    const UpBlock& block = up_blocks[i];
    for (size_t j = 0; j < block.resnets.size(); ++j) {
      const Tensor skip = skips.back();
      skips.pop_back();
      h = block.resnets[j].forward(ops::concat_channels(h, skip), &emb);
      if (!block.attentions.empty()) h = block.attentions[j].forward(h, next_kv(block.attentions[j]));
    }
    if (block.upsampler) {
      const Tensor& next_skip = skips.back();
      h = block.upsampler->forward(h, static_cast<int>(next_skip.dim(1)), static_cast<int>(next_skip.dim(2)));
    }
    record("up_blocks." + std::to_string(i), h);
  }

  // 5. output.
  const float* gamma = conv_norm_out.weight.data();
  const float* beta = conv_norm_out.bias.data();
  if (trace) record("conv_norm_out", ops::group_norm(h, c.norm_num_groups, c.norm_eps, gamma, beta, /*silu=*/false));
  h = ops::group_norm(h, c.norm_num_groups, c.norm_eps, gamma, beta, /*silu=*/true);
  h = conv_out(h);
  record("conv_out", h);
  return h;
}

}  // namespace lcmd
