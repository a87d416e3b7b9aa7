// CLIPTextModel (transformers/models/clip/modeling_clip.py): token + position embeddings,
// pre-LayerNorm encoder layers with causal self-attention and a quick_gelu MLP, and the final
// LayerNorm. The output is last_hidden_state (the pipeline's prompt_embeds); no padding mask.
#pragma once
#include <cstdint>
#include <vector>

#include "models/blocks.h"
#include "models/config.h"

namespace lcmd {

struct ClipEncoderLayer {
  ClipEncoderLayer(const Weights& w, const ClipTextConfig& c);
  Tensor forward(const Tensor& x) const;

  float eps;
  int heads;
  bool quick_gelu;  // else exact GELU
  ops::AttentionPrecision attention;
  Norm layer_norm1, layer_norm2;
  ops::Linear q_proj, k_proj, v_proj, out_proj;  // self_attn.*
  ops::Linear fc1, fc2;                          // mlp.*
};

class ClipTextModel {
 public:
  // w: the text encoder's root scope (holds text_model.*).
  ClipTextModel(const ClipTextConfig& config, const Weights& w);

  // ids: batch x max_position_embeddings token ids -> [batch, T, hidden_size].
  Tensor forward(const std::vector<std::vector<int32_t>>& ids) const;

  // hidden_states[0..num_layers] (embeddings, then each layer's output) when set.
  mutable std::vector<Tensor>* trace = nullptr;
  const ClipTextConfig& config() const { return config_; }

 private:
  ClipTextConfig config_;
  // The token embedding is the encoder's largest tensor (49408 x 768: 152 MB in float32). With
  // bf16 layers it is stored in bf16 (token_embedding_bf16, token_embedding empty): half the
  // memory, at the rounding the layers apply to their inputs anyway.
  Tensor token_embedding, position_embedding;
  std::vector<uint16_t> token_embedding_bf16;
  std::vector<ClipEncoderLayer> layers;
  Norm final_layer_norm;
};

}  // namespace lcmd
