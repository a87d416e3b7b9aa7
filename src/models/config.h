// Model configs as diffusers / transformers write them (config.json). Every width, head
// count, layer count, group count and epsilon the engine uses comes from here. Values the
// engine does not implement are refused with the field, the value and what is supported.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lcmd {

struct ClipTextConfig {
  int vocab_size = 49408;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int max_position_embeddings = 77;
  float layer_norm_eps = 1e-5f;
  std::string hidden_act = "quick_gelu";  // quick_gelu | gelu

  static ClipTextConfig from_json(const nlohmann::json& j, const std::string& source);
};

struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  std::vector<int> block_out_channels;
  std::vector<std::string> down_block_types;
  std::vector<std::string> up_block_types;
  std::vector<int> layers_per_block;             // per down block
  std::vector<int> num_attention_heads;          // per down block (diffusers' attention_head_dim quirk resolved)
  std::vector<int> transformer_layers_per_block; // per down block
  int cross_attention_dim = 768;
  int norm_num_groups = 32;
  float norm_eps = 1e-5f;
  std::optional<int> time_cond_proj_dim;          // LCM guidance embedding; absent for plain SD
  bool flip_sin_to_cos = true;
  float freq_shift = 0;
  int time_embedding_dim = 0;                     // 4 * block_out_channels[0] unless set
  int conv_in_kernel = 3;
  int conv_out_kernel = 3;
  float mid_block_scale_factor = 1;
  int downsample_padding = 1;

  static UNetConfig from_json(const nlohmann::json& j, const std::string& source);
};

struct VaeConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels;
  std::vector<std::string> down_block_types;
  std::vector<std::string> up_block_types;
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
  bool mid_block_add_attention = true;

  static VaeConfig from_json(const nlohmann::json& j, const std::string& source);
};

// Reads and parses a JSON file; ModelError names the file on failure.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace lcmd
