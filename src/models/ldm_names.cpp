#include "models/ldm_names.h"

#include <stdexcept>

#include "core/error.h"
#include "io/safetensors.h"

namespace lcmd {

using nlohmann::json;

namespace {

// ---- Leaf renames inside one module (diffusers leaf prefix -> LDM leaf prefix) ----

struct LeafRename {
  const char* diffusers;
  const char* ldm;
};

// ResnetBlock2D of the UNet: CompVis' ResBlock keeps its layers in Sequentials.
constexpr LeafRename kUNetResnetLeaves[] = {
    {"norm1.", "in_layers.0."},         {"conv1.", "in_layers.2."},  {"time_emb_proj.", "emb_layers.1."},
    {"norm2.", "out_layers.0."},        {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."},
};
// ResnetBlock of the VAE: same names except the shortcut.
constexpr LeafRename kVaeResnetLeaves[] = {{"conv_shortcut.", "nin_shortcut."}};
// The VAE mid-block's AttnBlock (its q/k/v/proj_out weights are 1x1 convolutions).
constexpr LeafRename kVaeAttentionLeaves[] = {
    {"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."},
};

template <size_t N>
std::string rename_leaf(const std::string& leaf, const LeafRename (&table)[N]) {
  for (const LeafRename& r : table) {
    const std::string from = r.diffusers;
    if (leaf.compare(0, from.size(), from) == 0) return r.ldm + leaf.substr(from.size());
  }
  return leaf;
}

std::string num(int i) { return std::to_string(i); }

// ---- The SD1.5 defaults for what tensor shapes cannot tell (../shared/sd15's configs, as
// diffusers / transformers write them for SD1.5; embedded so the binary needs no files) ----

constexpr const char* kSd15UNetConfig = R"({
  "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "conv_in_kernel": 3,
  "conv_out_kernel": 3, "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
  "norm_num_groups": 32, "out_channels": 4, "time_cond_proj_dim": null, "transformer_layers_per_block": 1,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": false, "use_linear_projection": false})";

constexpr const char* kSd15TextConfig = R"({
  "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77, "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 49408})";

constexpr const char* kSd15VaeConfig = R"({
  "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
  "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]})";

// LCMScheduler as LCM_Dreamshaper_v7 and lcm-lora-sdv1-5 use it.
constexpr const char* kSd15SchedulerConfig = R"({
  "_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "clip_sample_range": 1.0, "num_train_timesteps": 1000, "original_inference_steps": 50,
  "prediction_type": "epsilon", "set_alpha_to_one": true, "timestep_scaling": 10.0, "trained_betas": null})";

// ---- Reading shapes ----

class ShapeReader {
 public:
  explicit ShapeReader(const SafetensorsFile& file) : file_(file) {}
  bool has(const std::string& name) const { return file_.contains(name); }
  const Shape& shape(const std::string& name) const {
    const TensorInfo* t = file_.find(name);
    if (!t) throw ModelError(file_.path().string() + ": tensor '" + name + "' is missing (needed to read the architecture)");
    return t->shape;
  }
  int64_t dim(const std::string& name, size_t i, size_t rank) const {
    const Shape& s = shape(name);
    if (s.size() != rank)
      throw ModelError(file_.path().string() + ": tensor '" + name + "' has shape " + shape_str(s) + ", expected " +
                       std::to_string(rank) + " dimensions");
    return s[i];
  }
  // How many of prefix0., prefix1., ... exist, judged by `prefix<k><suffix>`.
  int count(const std::string& prefix, const std::string& suffix) const {
    int k = 0;
    while (has(prefix + num(k) + suffix)) ++k;
    return k;
  }
  bool any_with_prefix(const std::string& prefix) const {
    for (const TensorInfo& t : file_.tensors())
      if (t.name.compare(0, prefix.size(), prefix) == 0) return true;
    return false;
  }
  const SafetensorsFile& file() const { return file_; }

 private:
  const SafetensorsFile& file_;
};

json base_config(const std::filesystem::path& config_dir, const std::string& relative, const char* fallback) {
  if (config_dir.empty()) return json::parse(fallback);
  return read_json_file(config_dir / relative);
}

std::string source_name(const std::filesystem::path& config_dir, const std::string& relative,
                        const std::string& file) {
  return config_dir.empty() ? file + " (SD1.5 defaults + tensor shapes)"
                            : (config_dir / relative).string() + " + tensor shapes of " + file;
}

// Names the layouts this engine does not run, so the error says what the file is.
void check_family(const ShapeReader& r) {
  const std::string path = r.file().path().string();
  if (r.any_with_prefix("conditioner.embedders."))
    throw ModelError(path + ": an SDXL checkpoint (conditioner.embedders.*); only SD1.x checkpoints are supported");
  if (r.any_with_prefix("cond_stage_model.model."))
    throw ModelError(path + ": an SD2.x checkpoint (OpenCLIP text encoder cond_stage_model.model.*); only SD1.x "
                            "checkpoints are supported");
  if (!r.any_with_prefix(kLdmUNetPrefix)) {
    const bool diffusers_unet = r.has("conv_in.weight") && r.any_with_prefix("down_blocks.");
    throw ModelError(path + ": not an LDM single-file checkpoint (no model.diffusion_model.* UNet tensors)" +
                     std::string(diffusers_unet ? "; it looks like a diffusers UNet file: pass its model folder" : ""));
  }
  if (!r.any_with_prefix(kLdmVaePrefix))
    throw ModelError(path + ": has no VAE (first_stage_model.* tensors); this engine needs a checkpoint with the VAE baked in");
  if (!r.any_with_prefix(kLdmTextPrefix))
    throw ModelError(path + ": has no CLIP text encoder (cond_stage_model.transformer.* tensors)");
}

json infer_unet(const ShapeReader& r, json j) {
  const std::string u = kLdmUNetPrefix;
  const std::string conv_in = u + "input_blocks.0.0.weight", conv_out = u + "out.2.weight";
  const int64_t c0 = r.dim(conv_in, 0, 4);
  j["in_channels"] = r.dim(conv_in, 1, 4);
  j["conv_in_kernel"] = r.dim(conv_in, 2, 4);
  j["out_channels"] = r.dim(conv_out, 0, 4);
  j["conv_out_kernel"] = r.dim(conv_out, 2, 4);
  j["time_embedding_dim"] = r.dim(u + "time_embed.0.weight", 0, 2);
  const std::string cond_proj = u + "time_embedding.cond_proj.weight";  // LCM-distilled UNets only
  j["time_cond_proj_dim"] = r.has(cond_proj) ? json(r.dim(cond_proj, 1, 2)) : json(nullptr);

  // Block structure: input_blocks holds conv_in, then per down block `layers` resnets (each with
  // its attention) and a downsampler (none in the last block).
  if (!j.contains("layers_per_block") || !j["layers_per_block"].is_number_integer())
    throw ModelError("the base UNet config needs one integer layers_per_block to number LDM blocks");
  const int layers = j["layers_per_block"].get<int>();
  int n_input = 1;
  while (r.any_with_prefix(u + "input_blocks." + num(n_input) + ".")) ++n_input;
  if (n_input % (layers + 1) != 0)
    throw ModelError(r.file().path().string() + ": " + num(n_input) + " UNet input_blocks do not fit " + num(layers) +
                     " layers per block (an unsupported UNet layout)");
  const int n = n_input / (layers + 1);
  json widths = json::array(), down_types = json::array(), up_types = json::array();
  for (int i = 0; i < n; ++i) {
    const std::string first = u + "input_blocks." + num(i * (layers + 1) + 1) + ".";
    widths.push_back(r.dim(first + "0.out_layers.3.weight", 0, 4));
    const std::string proj_in = first + "1.proj_in.weight";
    if (r.has(proj_in) && r.shape(proj_in).size() == 2) j["use_linear_projection"] = true;  // SD2.x style: refused
    down_types.push_back(r.has(proj_in) ? "CrossAttnDownBlock2D" : "DownBlock2D");
    const std::string up_attention = u + "output_blocks." + num(i * (layers + 1)) + ".1.proj_in.weight";
    up_types.push_back(r.has(up_attention) ? "CrossAttnUpBlock2D" : "UpBlock2D");
  }
  if (widths[0].get<int64_t>() != c0)
    throw ModelError(r.file().path().string() + ": conv_in has " + std::to_string(c0) +
                     " channels but the first UNet block " + widths[0].dump());
  j["block_out_channels"] = widths;
  j["down_block_types"] = down_types;
  j["up_block_types"] = up_types;
  for (const TensorInfo& t : r.file().tensors()) {
    static const std::string to_k = ".attn2.to_k.weight";
    if (t.name.compare(0, u.size(), u) == 0 && t.name.size() > to_k.size() &&
        t.name.compare(t.name.size() - to_k.size(), to_k.size(), to_k) == 0) {
      j["cross_attention_dim"] = r.dim(t.name, 1, 2);
      break;
    }
  }
  return j;
}

json infer_text(const ShapeReader& r, json j) {
  const std::string t = std::string(kLdmTextPrefix) + "text_model.";
  const std::string tokens = t + "embeddings.token_embedding.weight";
  j["vocab_size"] = r.dim(tokens, 0, 2);
  j["hidden_size"] = r.dim(tokens, 1, 2);
  j["max_position_embeddings"] = r.dim(t + "embeddings.position_embedding.weight", 0, 2);
  j["num_hidden_layers"] = r.count(t + "encoder.layers.", ".layer_norm1.weight");
  j["intermediate_size"] = r.dim(t + "encoder.layers.0.mlp.fc1.weight", 0, 2);
  return j;
}

json infer_vae(const ShapeReader& r, json j) {
  const std::string v = kLdmVaePrefix;
  // LDM numbers the decoder's up blocks in reverse: up.k has width block_out_channels[k].
  const int n = r.count(v + "decoder.up.", ".block.0.conv1.weight");
  if (n == 0) throw ModelError(r.file().path().string() + ": no VAE decoder blocks (first_stage_model.decoder.up.*)");
  json widths = json::array();
  for (int k = 0; k < n; ++k) widths.push_back(r.dim(v + "decoder.up." + num(k) + ".block.0.conv2.weight", 0, 4));
  j["block_out_channels"] = widths;
  j["down_block_types"] = json::array();
  j["up_block_types"] = json::array();
  for (int k = 0; k < n; ++k) {
    j["down_block_types"].push_back("DownEncoderBlock2D");
    j["up_block_types"].push_back("UpDecoderBlock2D");
  }
  j["layers_per_block"] = r.count(v + "decoder.up.0.block.", ".conv1.weight") - 1;
  j["latent_channels"] = r.dim(v + "post_quant_conv.weight", 0, 4);
  j["out_channels"] = r.dim(v + "decoder.conv_out.weight", 0, 4);
  if (r.has(v + "encoder.conv_in.weight")) j["in_channels"] = r.dim(v + "encoder.conv_in.weight", 1, 4);
  j["mid_block_add_attention"] = r.has(v + "decoder.mid.attn_1.q.weight");
  return j;
}

}  // namespace

// ---- LdmNameMap ----

void LdmNameMap::add(const std::string& diffusers, const std::string& ldm, Leaves leaves) {
  modules_[diffusers + "."] = {ldm + ".", leaves};
}

RenamedTensor LdmNameMap::to_ldm(const std::string& name) const {
  // The longest mapped module prefix of the name (names have a handful of dots).
  for (size_t end = name.rfind('.'); end != std::string::npos && end > 0; end = name.rfind('.', end - 1)) {
    auto it = modules_.find(name.substr(0, end + 1));
    if (it == modules_.end()) continue;
    const std::string leaf = name.substr(end + 1);
    const Module& m = it->second;
    switch (m.leaves) {
      case Leaves::Same: return {root_ + m.ldm + leaf};
      case Leaves::UNetResnet: return {root_ + m.ldm + rename_leaf(leaf, kUNetResnetLeaves)};
      case Leaves::VaeResnet: return {root_ + m.ldm + rename_leaf(leaf, kVaeResnetLeaves)};
      case Leaves::VaeAttention: {
        // q/k/v/proj_out weights are 1x1 convolutions in LDM, linears in diffusers.
        const bool projection_weight = !leaf.starts_with("group_norm.") && leaf.ends_with(".weight");
        return {root_ + m.ldm + rename_leaf(leaf, kVaeAttentionLeaves), projection_weight};
      }
    }
  }
  throw std::logic_error("no LDM name for the diffusers tensor '" + name + "'");
}

LdmNameMap LdmNameMap::text_encoder() {
  LdmNameMap m(kLdmTextPrefix);
  m.add("text_model", "text_model");  // SD1.x keeps the transformers CLIPTextModel names
  return m;
}

LdmNameMap LdmNameMap::unet(const UNetConfig& c) {
  LdmNameMap m(kLdmUNetPrefix);
  m.add("time_embedding.linear_1", "time_embed.0");
  m.add("time_embedding.linear_2", "time_embed.2");
  m.add("time_embedding.cond_proj", "time_embedding.cond_proj");  // no CompVis name: converters pass it through
  m.add("conv_in", "input_blocks.0.0");
  m.add("conv_norm_out", "out.0");
  m.add("conv_out", "out.2");

  const int n = static_cast<int>(c.block_out_channels.size());
  int block = 1;  // input_blocks.0 is conv_in
  for (int i = 0; i < n; ++i) {
    const std::string d = "down_blocks." + num(i) + ".";
    for (int j = 0; j < c.layers_per_block[i]; ++j, ++block) {
      m.add(d + "resnets." + num(j), "input_blocks." + num(block) + ".0", Leaves::UNetResnet);
      m.add(d + "attentions." + num(j), "input_blocks." + num(block) + ".1");
    }
    if (i < n - 1) m.add(d + "downsamplers.0.conv", "input_blocks." + num(block++) + ".0.op");
  }
  m.add("mid_block.resnets.0", "middle_block.0", Leaves::UNetResnet);
  m.add("mid_block.attentions.0", "middle_block.1");
  m.add("mid_block.resnets.1", "middle_block.2", Leaves::UNetResnet);

  block = 0;
  for (int i = 0; i < n; ++i) {
    const std::string d = "up_blocks." + num(i) + ".";
    const int resnets = c.layers_per_block[n - 1 - i] + 1;
    for (int j = 0; j < resnets; ++j, ++block) {
      m.add(d + "resnets." + num(j), "output_blocks." + num(block) + ".0", Leaves::UNetResnet);
      m.add(d + "attentions." + num(j), "output_blocks." + num(block) + ".1");
    }
    // The upsampler sits in the block's last output_block, after its attention when it has one.
    const bool attention = c.up_block_types[i] == "CrossAttnUpBlock2D";
    if (i < n - 1) m.add(d + "upsamplers.0.conv", "output_blocks." + num(block - 1) + (attention ? ".2" : ".1") + ".conv");
  }
  return m;
}

LdmNameMap LdmNameMap::vae(const VaeConfig& c) {
  LdmNameMap m(kLdmVaePrefix);
  m.add("quant_conv", "quant_conv");
  m.add("post_quant_conv", "post_quant_conv");
  const int n = static_cast<int>(c.block_out_channels.size());
  for (const std::string part : {"encoder", "decoder"}) {
    m.add(part + ".conv_in", part + ".conv_in");
    m.add(part + ".conv_out", part + ".conv_out");
    m.add(part + ".conv_norm_out", part + ".norm_out");
    m.add(part + ".mid_block.resnets.0", part + ".mid.block_1", Leaves::VaeResnet);
    m.add(part + ".mid_block.resnets.1", part + ".mid.block_2", Leaves::VaeResnet);
    m.add(part + ".mid_block.attentions.0", part + ".mid.attn_1", Leaves::VaeAttention);
  }
  for (int i = 0; i < n; ++i) {
    const std::string down = "encoder.down_blocks." + num(i), ldm_down = "encoder.down." + num(i);
    for (int j = 0; j < c.layers_per_block; ++j)
      m.add(down + ".resnets." + num(j), ldm_down + ".block." + num(j), Leaves::VaeResnet);
    m.add(down + ".downsamplers.0.conv", ldm_down + ".downsample.conv");
    // The decoder is numbered in reverse: diffusers up_blocks.i is LDM up.(n-1-i).
    const std::string up = "decoder.up_blocks." + num(i), ldm_up = "decoder.up." + num(n - 1 - i);
    for (int j = 0; j < c.layers_per_block + 1; ++j)
      m.add(up + ".resnets." + num(j), ldm_up + ".block." + num(j), Leaves::VaeResnet);
    m.add(up + ".upsamplers.0.conv", ldm_up + ".upsample.conv");
  }
  return m;
}

// ---- Configs ----

LdmConfigs infer_ldm_configs(const SafetensorsFile& file, const std::filesystem::path& config_dir) {
  const ShapeReader r(file);
  check_family(r);
  const std::string path = file.path().string();
  LdmConfigs c;
  c.unet_json = infer_unet(r, base_config(config_dir, "unet/config.json", kSd15UNetConfig));
  c.text_json = infer_text(r, base_config(config_dir, "text_encoder/config.json", kSd15TextConfig));
  c.vae_json = infer_vae(r, base_config(config_dir, "vae/config.json", kSd15VaeConfig));
  c.scheduler_json = base_config(config_dir, "scheduler/scheduler_config.json", kSd15SchedulerConfig);
  try {
    c.unet = UNetConfig::from_json(c.unet_json, source_name(config_dir, "unet/config.json", path));
    c.text = ClipTextConfig::from_json(c.text_json, source_name(config_dir, "text_encoder/config.json", path));
    c.vae = VaeConfig::from_json(c.vae_json, source_name(config_dir, "vae/config.json", path));
    c.scheduler =
        LcmSchedulerConfig::from_json(c.scheduler_json, source_name(config_dir, "scheduler/scheduler_config.json", path));
  } catch (const ModelError& e) {
    // Head counts and the like cannot be read from shapes: say where else they can come from.
    if (!config_dir.empty()) throw;
    throw ModelError(std::string(e.what()) +
                     " (the built-in SD1.5 values do not fit this file; pass --config-dir DIR, a diffusers folder with "
                     "its configs)");
  }
  return c;
}

RenamingSource ldm_unet_source(const WeightSource& file, const UNetConfig& config) {
  auto map = std::make_shared<LdmNameMap>(LdmNameMap::unet(config));
  return RenamingSource(file, [map](const std::string& name) { return map->to_ldm(name); });
}

RenamingSource ldm_vae_source(const WeightSource& file, const VaeConfig& config) {
  auto map = std::make_shared<LdmNameMap>(LdmNameMap::vae(config));
  return RenamingSource(file, [map](const std::string& name) { return map->to_ldm(name); });
}

RenamingSource ldm_text_source(const WeightSource& file) {
  auto map = std::make_shared<LdmNameMap>(LdmNameMap::text_encoder());
  return RenamingSource(file, [map](const std::string& name) { return map->to_ldm(name); });
}

}  // namespace lcmd
