// LoRA files merged into the base weights at load time (diffusers' fuse_lora):
//   W' = W + scale * (alpha / rank) * (up.reshape(out, rank) @ down.reshape(rank, in*kh*kw)).reshape(W.shape)
// for linear layers and convolutions of any kernel (the down factor carries the base conv's
// kernel, the up factor is 1x1). Biases do not change. A module without ".alpha" gets no factor
// (alpha = rank), as in diffusers.
//
// Key styles: kohya ("lora_unet_<module with . -> _>.lora_down.weight" / ".lora_up.weight" /
// ".alpha", "lora_te_" for the text encoder) and diffusers/PEFT ("unet.<module>.lora_A.weight" /
// "lora_B.weight", ".lora.down.weight" / ".lora.up.weight", "text_encoder.<module>...").
// kohya names are ambiguous ('_' is also inside module names), so they are never parsed: the
// merging source computes kohya(name) for every module the model walk asks for and looks that up.
// Every LoRA module must land on some layer; check_all_applied() names those that did not.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lcmd/engine.h"
#include "models/weights.h"

namespace lcmd {

// One low-rank update, in float32 (f16 files are widened).
struct LoraModule {
  std::string key;    // the module's name in the LoRA file (without the down/up/alpha suffix)
  Tensor down, up;    // [rank, in(, kh, kw)] and [out, rank(, 1, 1)]
  float alpha = 0;
  bool has_alpha = false;  // without it diffusers applies no factor (as if alpha = rank)
  int rank = 0;
  mutable bool applied = false;
};

// The LoRA files of a load, with their scales.
class LoraSet {
 public:
  // Reads and checks every file: ModelError for unreadable files, unknown key styles,
  // modules without both factors, or factors whose ranks disagree. Pickles are refused.
  static std::shared_ptr<LoraSet> load(const std::vector<LoraSpec>& specs);

  bool empty() const { return files_.empty(); }

  struct File {
    std::filesystem::path path;
    float scale = 1;
    std::map<std::string, LoraModule> modules;  // by key
  };
  const std::vector<File>& files() const { return files_; }

  // Adds every matching module's update to `weight` (the model's tensor `module_name`.weight)
  // in file order. `kohya_prefix` ("lora_unet_", "lora_te_") and `diffusers_prefix` ("unet.",
  // "text_encoder.") select the component. ModelError when a factor's shape does not fit.
  void merge_into(Tensor& weight, const std::string& module_name, const std::string& kohya_prefix,
                  const std::string& diffusers_prefix) const;
  // True when some module of some file updates that layer.
  bool targets(const std::string& module_name, const std::string& kohya_prefix, const std::string& diffusers_prefix) const;

  // ModelError naming every LoRA module no layer of the model took (up to a few, and the count).
  void check_all_applied() const;

 private:
  std::vector<File> files_;
};

// A source that adds the LoRA updates to the weights it passes through.
class LoraMergingSource : public WeightSource {
 public:
  enum class Component { UNet, TextEncoder };
  LoraMergingSource(const WeightSource& base, std::shared_ptr<const LoraSet> loras, Component component);
  bool contains(const std::string& name) const override { return base_.contains(name); }
  Tensor load(const std::string& name, const Shape& shape) const override;
  // The base's stored layers that no LoRA updates pass through, so a packed model's layers
  // stay in place; the others are loaded as values and merged.
  std::optional<ops::StoredWeights> stored_layer(const std::string& name, const Shape& shape) const override;
  std::string describe() const override { return base_.describe(); }

 private:
  const WeightSource& base_;
  std::shared_ptr<const LoraSet> loras_;
  std::string kohya_prefix_, diffusers_prefix_;
};

// "lora_unet_" + module with '.' -> '_'.
std::string kohya_name(const std::string& kohya_prefix, const std::string& module_name);

// A one-paragraph description of each LoRA file (modules, ranks, alphas, dtypes), for `lcmd info`.
std::string describe_loras(const std::vector<LoraSpec>& specs);

}  // namespace lcmd
