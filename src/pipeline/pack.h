// `lcmd pack`: any model the engine loads (diffusers folder, single-file checkpoint with LoRAs
// merged, or a packed model) written as one packed file (io/packed_model.h) that loads with an
// mmap and a header parse.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lcmd/engine.h"

namespace lcmd {

struct PackOptions {
  std::filesystem::path tokenizer_dir, config_dir;  // for single-file checkpoints, as Engine::load
  std::vector<LoraSpec> loras;                      // merged into the packed weights
  // How convolution and linear weights are stored; norms, biases and embeddings are always
  // float32. "auto": bfloat16 for the text encoder and UNet (what the default precision computes
  // in), float32 for the VAE (which always computes in float32); "fp32", "fp16", "bf16": all.
  std::string dtype = "auto";
};

struct PackSummary {
  size_t tensors = 0;
  uint64_t file_bytes = 0;
};

// Writes the packed model atomically (a temporary file renamed when complete; nothing is left
// behind on failure). InputError for a bad dtype, ModelError for a bad model, std::system_error
// for I/O failures (e.g. a full disk).
PackSummary pack_model(const std::filesystem::path& model, const std::filesystem::path& out, const PackOptions& options);

// The tokenizer of any model path: embedded in a packed model, else as locate_tokenizer finds it.
class ClipTokenizer;
ClipTokenizer load_model_tokenizer(const std::filesystem::path& model, const std::filesystem::path& tokenizer_dir,
                                   const std::filesystem::path& config_dir);

}  // namespace lcmd
