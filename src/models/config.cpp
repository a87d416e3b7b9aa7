#include "models/config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace lcmd {

using nlohmann::json;

namespace {

// Typed access to one config field with errors that name the source and field.
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {
    if (!j.is_object()) fail("", "must be a JSON object");
  }
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw ModelError(source_ + (field.empty() ? "" : ": field '" + field + "'") + " " + what);
  }
  bool present(const std::string& f) const { return j_.contains(f) && !j_.at(f).is_null(); }

  int integer(const std::string& f, int def, int lo = 0, int hi = 1 << 20) const {
    if (!present(f)) return def;
    const json& v = j_.at(f);
    if (!v.is_number_integer()) fail(f, "must be an integer, got " + v.dump());
    const auto x = v.get<int64_t>();
    if (x < lo || x > hi) fail(f, "is " + std::to_string(x) + ", allowed " + std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<int>(x);
  }
  float number(const std::string& f, float def) const {
    if (!present(f)) return def;
    const json& v = j_.at(f);
    if (!v.is_number()) fail(f, "must be a number, got " + v.dump());
    return v.get<float>();
  }
  bool boolean(const std::string& f, bool def) const {
    if (!present(f)) return def;
    if (!j_.at(f).is_boolean()) fail(f, "must be true or false, got " + j_.at(f).dump());
    return j_.at(f).get<bool>();
  }
  std::string string(const std::string& f, const std::string& def) const {
    if (!present(f)) return def;
    if (!j_.at(f).is_string()) fail(f, "must be a string, got " + j_.at(f).dump());
    return j_.at(f).get<std::string>();
  }
  std::vector<int> int_list(const std::string& f, int lo = 1, int hi = 1 << 20) const {
    if (!present(f)) fail("", "lacks the field '" + f + "'");
    const json& v = j_.at(f);
    if (!v.is_array() || v.empty()) fail(f, "must be a non-empty list of integers, got " + v.dump());
    std::vector<int> out;
    for (const json& e : v) {
      if (!e.is_number_integer() || e.get<int64_t>() < lo || e.get<int64_t>() > hi)
        fail(f, "must hold integers in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + v.dump());
      out.push_back(e.get<int>());
    }
    return out;
  }
  // An int or a list of ints (diffusers allows both), expanded to `n` entries.
  std::vector<int> int_or_list(const std::string& f, int def, size_t n) const {
    if (!present(f)) return std::vector<int>(n, def);
    if (j_.at(f).is_array()) {
      std::vector<int> v = int_list(f);
      if (v.size() != n) fail(f, "must have " + std::to_string(n) + " entries (one per block), got " + j_.at(f).dump());
      return v;
    }
    return std::vector<int>(n, integer(f, def, 1));
  }
  std::vector<std::string> string_list(const std::string& f) const {
    if (!present(f)) fail("", "lacks the field '" + f + "'");
    const json& v = j_.at(f);
    if (!v.is_array()) fail(f, "must be a list of strings, got " + v.dump());
    std::vector<std::string> out;
    for (const json& e : v) {
      if (!e.is_string()) fail(f, "must be a list of strings, got " + v.dump());
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  // Fields whose only supported value is `expected` (a default if absent).
  void require(const std::string& f, const json& expected) const {
    if (!j_.contains(f)) return;
    const json& v = j_.at(f);
    if (v != expected && !(expected.is_null() && v.is_null()))
      fail(f, "is " + v.dump() + "; this engine supports only " + expected.dump());
  }

 private:
  const json& j_;
  std::string source_;
};

void check_block_types(const Fields& f, const std::string& field, const std::vector<std::string>& types,
                       const std::vector<std::string>& allowed, size_t n) {
  if (types.size() != n)
    f.fail(field, "has " + std::to_string(types.size()) + " entries but block_out_channels has " + std::to_string(n));
  for (const auto& t : types) {
    bool ok = false;
    for (const auto& a : allowed) ok |= t == a;
    if (!ok) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      f.fail(field, "contains '" + t + "'; supported: " + list);
    }
  }
}

void check_groups(const Fields& f, const std::vector<int>& channels, int groups) {
  for (int c : channels)
    if (c % groups != 0)
      f.fail("norm_num_groups", "is " + std::to_string(groups) + ", which does not divide block width " + std::to_string(c));
}

}  // namespace

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw ModelError(path.string() + ": cannot open (missing file?)");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw ModelError(path.string() + ": not valid JSON (" + e.what() + ")");
  }
}

ClipTextConfig ClipTextConfig::from_json(const json& j, const std::string& source) {
  Fields f(j, source);
  ClipTextConfig c;
  c.vocab_size = f.integer("vocab_size", c.vocab_size, 1, 1 << 22);
  c.hidden_size = f.integer("hidden_size", c.hidden_size, 1);
  c.intermediate_size = f.integer("intermediate_size", c.intermediate_size, 1);
  c.num_hidden_layers = f.integer("num_hidden_layers", c.num_hidden_layers, 1, 1000);
  c.num_attention_heads = f.integer("num_attention_heads", c.num_attention_heads, 1, 1024);
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings, 1, 1 << 16);
  c.layer_norm_eps = f.number("layer_norm_eps", c.layer_norm_eps);
  c.hidden_act = f.string("hidden_act", c.hidden_act);
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    f.fail("hidden_act", "is '" + c.hidden_act + "'; supported: quick_gelu, gelu");
  if (c.hidden_size % c.num_attention_heads != 0)
    f.fail("num_attention_heads", "(" + std::to_string(c.num_attention_heads) + ") does not divide hidden_size " +
                                      std::to_string(c.hidden_size));
  return c;
}

UNetConfig UNetConfig::from_json(const json& j, const std::string& source) {
  Fields f(j, source);
  UNetConfig c;
  f.require("_class_name", "UNet2DConditionModel");
  c.in_channels = f.integer("in_channels", c.in_channels, 1);
  c.out_channels = f.integer("out_channels", c.out_channels, 1);
  c.block_out_channels = f.int_list("block_out_channels");
  const size_t n = c.block_out_channels.size();
  c.down_block_types = f.string_list("down_block_types");
  c.up_block_types = f.string_list("up_block_types");
  check_block_types(f, "down_block_types", c.down_block_types, {"CrossAttnDownBlock2D", "DownBlock2D"}, n);
  check_block_types(f, "up_block_types", c.up_block_types, {"CrossAttnUpBlock2D", "UpBlock2D"}, n);
  c.layers_per_block = f.int_or_list("layers_per_block", 2, n);
  // diffusers' naming quirk: `attention_head_dim` holds the number of heads when
  // `num_attention_heads` is null (SD1.5: attention_head_dim 8 = 8 heads).
  c.num_attention_heads = f.present("num_attention_heads") ? f.int_or_list("num_attention_heads", 8, n)
                                                            : f.int_or_list("attention_head_dim", 8, n);
  c.transformer_layers_per_block = f.int_or_list("transformer_layers_per_block", 1, n);
  c.cross_attention_dim = f.integer("cross_attention_dim", c.cross_attention_dim, 1);
  c.norm_num_groups = f.integer("norm_num_groups", c.norm_num_groups, 1);
  c.norm_eps = f.number("norm_eps", c.norm_eps);
  if (f.present("time_cond_proj_dim")) c.time_cond_proj_dim = f.integer("time_cond_proj_dim", 0, 2);
  if (c.time_cond_proj_dim && *c.time_cond_proj_dim % 2 != 0) f.fail("time_cond_proj_dim", "must be even");
  c.flip_sin_to_cos = f.boolean("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = f.number("freq_shift", c.freq_shift);
  c.time_embedding_dim = f.integer("time_embedding_dim", 4 * c.block_out_channels[0], 1);
  c.conv_in_kernel = f.integer("conv_in_kernel", 3, 1, 7);
  c.conv_out_kernel = f.integer("conv_out_kernel", 3, 1, 7);
  if (c.conv_in_kernel % 2 == 0) f.fail("conv_in_kernel", "must be odd");
  if (c.conv_out_kernel % 2 == 0) f.fail("conv_out_kernel", "must be odd");
  c.mid_block_scale_factor = f.number("mid_block_scale_factor", 1);
  c.downsample_padding = f.integer("downsample_padding", 1, 1, 1);
  check_groups(f, c.block_out_channels, c.norm_num_groups);
  for (size_t i = 0; i < n; ++i)
    if (c.block_out_channels[i] % c.num_attention_heads[i] != 0)
      f.fail("attention_head_dim", "(" + std::to_string(c.num_attention_heads[i]) + " heads) does not divide " +
                                       std::to_string(c.block_out_channels[i]) + " channels");
  // What SD1.5-family UNets use; anything else would need code this engine does not have.
  f.require("act_fn", "silu");
  f.require("mid_block_type", "UNetMidBlock2DCrossAttn");
  f.require("use_linear_projection", false);
  f.require("only_cross_attention", false);
  f.require("dual_cross_attention", false);
  f.require("upcast_attention", false);
  f.require("class_embed_type", nullptr);
  f.require("addition_embed_type", nullptr);
  f.require("encoder_hid_dim", nullptr);
  f.require("resnet_time_scale_shift", "default");
  f.require("time_embedding_type", "positional");
  f.require("time_embedding_act_fn", nullptr);
  f.require("timestep_post_act", nullptr);
  f.require("center_input_sample", false);
  f.require("resnet_out_scale_factor", 1.0);
  f.require("resnet_skip_time_act", false);
  f.require("cross_attention_norm", nullptr);
  f.require("attention_type", "default");
  f.require("num_class_embeds", nullptr);
  return c;
}

VaeConfig VaeConfig::from_json(const json& j, const std::string& source) {
  Fields f(j, source);
  VaeConfig c;
  f.require("_class_name", "AutoencoderKL");
  c.in_channels = f.integer("in_channels", c.in_channels, 1);
  c.out_channels = f.integer("out_channels", c.out_channels, 1);
  c.latent_channels = f.integer("latent_channels", c.latent_channels, 1);
  c.block_out_channels = f.int_list("block_out_channels");
  const size_t n = c.block_out_channels.size();
  c.down_block_types = f.string_list("down_block_types");
  c.up_block_types = f.string_list("up_block_types");
  check_block_types(f, "down_block_types", c.down_block_types, {"DownEncoderBlock2D"}, n);
  check_block_types(f, "up_block_types", c.up_block_types, {"UpDecoderBlock2D"}, n);
  c.layers_per_block = f.integer("layers_per_block", c.layers_per_block, 1, 100);
  c.norm_num_groups = f.integer("norm_num_groups", c.norm_num_groups, 1);
  c.scaling_factor = f.number("scaling_factor", c.scaling_factor);
  if (!(c.scaling_factor > 0)) f.fail("scaling_factor", "must be positive");
  c.mid_block_add_attention = f.boolean("mid_block_add_attention", true);
  f.require("act_fn", "silu");
  f.require("shift_factor", nullptr);
  check_groups(f, c.block_out_channels, c.norm_num_groups);
  return c;
}

}  // namespace lcmd
