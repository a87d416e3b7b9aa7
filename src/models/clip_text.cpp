#include "models/clip_text.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/dtype.h"

namespace lcmd {

ClipEncoderLayer::ClipEncoderLayer(const Weights& w, const ClipTextConfig& c)
    : eps(c.layer_norm_eps),
      heads(c.num_attention_heads),
      quick_gelu(c.hidden_act == "quick_gelu"),
      attention(attention_precision(w.precision())),
      layer_norm1(w["layer_norm1"], c.hidden_size),
      layer_norm2(w["layer_norm2"], c.hidden_size),
      q_proj(load_linear(w["self_attn"]["q_proj"], c.hidden_size, c.hidden_size)),
      k_proj(load_linear(w["self_attn"]["k_proj"], c.hidden_size, c.hidden_size)),
      v_proj(load_linear(w["self_attn"]["v_proj"], c.hidden_size, c.hidden_size)),
      out_proj(load_linear(w["self_attn"]["out_proj"], c.hidden_size, c.hidden_size)),
      fc1(load_linear(w["mlp"]["fc1"], c.hidden_size, c.intermediate_size)),
      fc2(load_linear(w["mlp"]["fc2"], c.intermediate_size, c.hidden_size)) {}

Tensor ClipEncoderLayer::forward(const Tensor& x) const {
  Tensor h = ops::layer_norm(x, eps, layer_norm1.weight.data(), layer_norm1.bias.data());
  const Tensor attn = ops::attention(q_proj(h), k_proj(h), v_proj(h), heads, /*causal=*/true, attention);
  const Tensor after_attn = out_proj(attn, &x);
  h = ops::layer_norm(after_attn, eps, layer_norm2.weight.data(), layer_norm2.bias.data());
  h = fc1(h);
  if (quick_gelu)
    ops::quick_gelu_(h);
  else
    ops::gelu_erf_(h);
  return fc2(h, &after_attn);
}

ClipTextModel::ClipTextModel(const ClipTextConfig& c, const Weights& w) : config_(c) {
  const Weights tm = w["text_model"];
  token_embedding = tm["embeddings"]["token_embedding"].tensor("weight", {c.vocab_size, c.hidden_size});
  if (ops::runnable_precision(w.precision()) == Precision::BF16) {
    token_embedding_bf16.resize(token_embedding.numel());
    convert_from_f32(token_embedding.data(), token_embedding.numel(), DType::BF16,
                     reinterpret_cast<uint8_t*>(token_embedding_bf16.data()));
    token_embedding = Tensor();
  }
  position_embedding =
      tm["embeddings"]["position_embedding"].tensor("weight", {c.max_position_embeddings, c.hidden_size});
  for (int i = 0; i < c.num_hidden_layers; ++i) layers.emplace_back(tm["encoder"]["layers"][i], c);
  final_layer_norm = Norm(tm["final_layer_norm"], c.hidden_size);
}

Tensor ClipTextModel::forward(const std::vector<std::vector<int32_t>>& ids) const {
  const int64_t batch = static_cast<int64_t>(ids.size()), d = config_.hidden_size;
  if (batch == 0) throw std::invalid_argument("text encoder needs at least one sequence");
  const int64_t tokens = static_cast<int64_t>(ids[0].size());
  if (tokens == 0 || tokens > config_.max_position_embeddings)
    throw std::invalid_argument("text encoder sequences must hold 1.." + std::to_string(config_.max_position_embeddings) +
                                " tokens, got " + std::to_string(tokens));
  Tensor h({batch, tokens, d});
  for (int64_t b = 0; b < batch; ++b) {
    if (static_cast<int64_t>(ids[b].size()) != tokens)
      throw std::invalid_argument("text encoder sequences must have equal lengths");
    for (int64_t t = 0; t < tokens; ++t) {
      const int32_t id = ids[b][t];
      if (id < 0 || id >= config_.vocab_size)
        throw std::invalid_argument("token id " + std::to_string(id) + " outside the vocabulary (0.." +
                                    std::to_string(config_.vocab_size - 1) + ")");
      const int64_t row = static_cast<int64_t>(id) * d;
      const float* pos = position_embedding.data() + t * d;
      float* out = h.data() + (b * tokens + t) * d;
      if (token_embedding_bf16.empty()) {
        for (int64_t i = 0; i < d; ++i) out[i] = token_embedding.data()[row + i] + pos[i];
      } else {
        for (int64_t i = 0; i < d; ++i) out[i] = bf16_to_f32(token_embedding_bf16[row + i]) + pos[i];
      }
    }
  }
  if (trace) trace->push_back(h.clone());
  for (const auto& layer : layers) {
    h = layer.forward(h);
    if (trace) trace->push_back(h.clone());
  }
  return ops::layer_norm(h, config_.layer_norm_eps, final_layer_norm.weight.data(), final_layer_norm.bias.data());
}

}  // namespace lcmd
