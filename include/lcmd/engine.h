// lcmd's public API: an Engine is loaded once per process from a diffusers model folder (or a
// single-file LDM checkpoint, optionally with LoRAs merged in) and turns text prompts into images. generate() may be called from several threads; runs are
// serialised, each using all the engine's threads.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace lcmd {

struct GenerateRequest {
  std::string prompt;                 // UTF-8
  // The unconditional prompt of classifier-free guidance (plain SD UNets with guidance_scale > 1;
  // empty = ""). LCM-distilled UNets embed the guidance scale instead and do not use it.
  std::string negative_prompt;
  int width = 256;                    // positive multiple of 8, at most kMaxImageSide
  int height = 256;
  int steps = 4;                      // 1..kMaxSteps (LCM is trained for 1-8)
  // Finite. LCM-distilled UNets embed it (w = gs - 1, a double until then as in diffusers); plain
  // SD UNets run classifier-free guidance when it is > 1 (two UNet passes per step).
  double guidance_scale = 8.0;
  std::optional<uint64_t> seed;       // random when absent; the result says which was used
  // "vae" (the model's AutoencoderKL), "taesd" (the tiny decoder: 5-20x faster, softer detail;
  // needs EngineOptions::taesd_dir), or empty for the engine's default.
  std::string decoder;
};

inline constexpr int kMaxImageSide = 2048;
inline constexpr int kMaxSteps = 50;

// Throws InputError naming the field and its allowed range.
void validate(const GenerateRequest& request);

struct StageTimings {
  double tokenize_ms = 0;
  double text_encoder_ms = 0;         // incl. the cross-attention K/V of the prompt
  std::vector<double> unet_step_ms;   // one per denoising step
  double vae_decode_ms = 0;
  double png_ms = 0;
  double total_ms = 0;
  // Multiply-accumulates done by convolutions, matrix products and attention, per stage
  // (for achieved GFLOP/s = 2 * MAC / time).
  double text_encoder_gmac = 0;
  double unet_step_gmac = 0;          // per step
  double vae_decode_gmac = 0;
};

struct GenerateResult {
  std::vector<uint8_t> png;           // the encoded image
  std::vector<uint8_t> rgb;           // height x width x 3, row-major
  int width = 0, height = 0;
  uint64_t seed = 0;
  StageTimings timings;
  bool text_embedding_cached = false; // the prompt's embedding came from the engine's LRU cache
};

// A LoRA merged into the base weights at load: W += scale * alpha/rank * up @ down.
struct LoraSpec {
  std::filesystem::path path;         // a .safetensors LoRA (kohya or diffusers/PEFT key names)
  double scale = 1.0;
};

struct EngineOptions {
  int threads = 0;                    // 0 = every core this process may use
  std::string precision = "auto";     // fp32 | bf16 | int8 | auto (fastest that meets its bounds here)
  // LRU cache of text-encoder outputs keyed by token ids; 0 entries disables it.
  size_t text_cache_entries = 64;
  size_t text_cache_bytes = 64u << 20;
  // LoRAs merged into the UNet (and text encoder) weights, in order.
  std::vector<LoraSpec> loras;
  // For single-file checkpoints, which carry no tokenizer: the CLIP tokenizer folder
  // (vocab.json, merges.txt). Empty: <config_dir>/tokenizer, then tokenizer/ next to the file.
  std::filesystem::path tokenizer_dir;
  // For single-file checkpoints: a diffusers folder whose unet/, vae/, text_encoder/ and
  // scheduler/ configs replace the built-in SD1.5 defaults (head counts, eps, scheduler...).
  // Widths are always read from the file's tensor shapes.
  std::filesystem::path config_dir;
  // A diffusers AutoencoderTiny folder (config.json + diffusion_pytorch_model.safetensors, e.g.
  // madebyollin/taesd) loaded next to the VAE; requests may then ask for decoder "taesd".
  std::filesystem::path taesd_dir;
  std::string default_decoder = "vae";  // "vae" | "taesd"
};

// Called after each denoising step (1-based step, total steps). Returning false stops the
// run: generate() then throws CancelledError (e.g. a deadline is near).
using ProgressCallback = std::function<bool(int step, int total)>;

class CancelledError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Engine {
 public:
  // Loads and validates every component; ModelError names the file, tensor and problem.
  // `model` is a diffusers folder (LatentConsistencyModelPipeline or StableDiffusionPipeline),
  // a single-file .safetensors checkpoint with the original LDM key names, or a packed model
  // (`lcmd pack`: configs and tokenizer inside).
  static std::unique_ptr<Engine> load(const std::filesystem::path& model, const EngineOptions& options = {});
  // An engine with random weights (PyTorch's default init, the same values make-random-model
  // writes) built in memory from a folder of configs such as ../shared/sd15, with the CLIP
  // tokenizer files from tokenizer_dir: the full-size architecture without a download.
  static std::unique_ptr<Engine> load_random(const std::filesystem::path& configs_dir,
                                             const std::filesystem::path& tokenizer_dir,
                                             const EngineOptions& options = {});
  virtual ~Engine() = default;

  virtual GenerateResult generate(const GenerateRequest& request, const ProgressCallback& progress = {}) const = 0;
  // The 77 CLIP token ids the prompt becomes.
  virtual std::vector<int32_t> tokenize(const std::string& prompt) const = 0;
  // What runs in which precision, e.g. "fp32 (text encoder fp32, unet fp32, vae fp32)".
  virtual std::string precision() const = 0;
  virtual int threads() const = 0;
};

// What a model folder, single file or packed model holds, without loading it: each component's file, tensor
// and parameter counts by dtype, its config (inferred from the shapes for single files), and the
// LoRAs of `options`. ModelError when the model is incomplete or corrupt.
std::string describe_model(const std::filesystem::path& model, const EngineOptions& options = {});
inline std::string describe_model_folder(const std::filesystem::path& model_dir) { return describe_model(model_dir); }

// Re-reads a packed model's data and checks its sha256 against the header's (a ModelError names
// the mismatch); InputError for any other kind of model.
void verify_model(const std::filesystem::path& model);

}  // namespace lcmd
