// Single-file checkpoints with the original CompVis/LDM key names (civitai / A1111 style):
// UNet under "model.diffusion_model.", VAE under "first_stage_model.", CLIP text under
// "cond_stage_model.transformer.". This is the one place that knows those names: a table maps
// each diffusers module the model walk asks for onto its LDM module, and RenamingSource serves
// the walk from the file, so both formats share every line after the name mapping.
//
// An LDM file does not store configs. Widths, depths, block types, cross_attention_dim,
// time_cond_proj_dim (an LCM-distilled UNet has time_embedding.cond_proj), vocabulary and hidden
// size are read from tensor shapes; what shapes cannot tell (head counts, GroupNorm groups, eps,
// activation, VAE scaling factor, the scheduler) comes from the built-in SD1.5 defaults or from
// a diffusers folder's configs (config_dir).
#pragma once
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "models/weights.h"
#include "sched/lcm_scheduler.h"

namespace lcmd {

class SafetensorsFile;

inline constexpr const char* kLdmUNetPrefix = "model.diffusion_model.";
inline constexpr const char* kLdmVaePrefix = "first_stage_model.";
inline constexpr const char* kLdmTextPrefix = "cond_stage_model.transformer.";

// Diffusers name -> LDM name for one component, built from its config (block counts and layers
// fix the LDM block numbering).
class LdmNameMap {
 public:
  static LdmNameMap unet(const UNetConfig& config);
  static LdmNameMap vae(const VaeConfig& config);
  static LdmNameMap text_encoder();

  // The LDM name (with the component's prefix) of a diffusers parameter name such as
  // "down_blocks.0.resnets.1.norm1.weight". std::logic_error for names outside the module tree
  // (the model walk only asks for names the table covers).
  RenamedTensor to_ldm(const std::string& diffusers_name) const;

  // Leaf renames inside a module.
  enum class Leaves { Same, UNetResnet, VaeResnet, VaeAttention };

 private:
  struct Module {
    std::string ldm;  // LDM module prefix, ending in '.'
    Leaves leaves;
  };
  explicit LdmNameMap(std::string root) : root_(std::move(root)) {}
  void add(const std::string& diffusers, const std::string& ldm, Leaves leaves = Leaves::Same);

  std::string root_;
  std::unordered_map<std::string, Module> modules_;  // diffusers module prefix (ending in '.') -> LDM
};

// The configs of a single-file checkpoint, and the JSON they were parsed from (for `lcmd info`).
struct LdmConfigs {
  ClipTextConfig text;
  UNetConfig unet;
  VaeConfig vae;
  LcmSchedulerConfig scheduler;
  nlohmann::json text_json, unet_json, vae_json, scheduler_json;
};

// Reads the architecture from the file's tensor shapes on top of the SD1.5 defaults (or the
// configs of the diffusers folder `config_dir` when not empty). ModelError when the file is not
// an SD1.x LDM checkpoint (names the component that is missing, or the SD2/SDXL layout it has).
LdmConfigs infer_ldm_configs(const SafetensorsFile& file, const std::filesystem::path& config_dir = {});

// Sources that serve each component's diffusers names from an LDM file's source.
RenamingSource ldm_unet_source(const WeightSource& file, const UNetConfig& config);
RenamingSource ldm_vae_source(const WeightSource& file, const VaeConfig& config);
RenamingSource ldm_text_source(const WeightSource& file);

}  // namespace lcmd
