// `lcmd make-random-model`: a complete diffusers model folder with the configs of an existing
// one and random weights (PyTorch's default init), so the full-size architecture can be run and
// benchmarked without downloading weights.
#pragma once
#include <cstdint>
#include <filesystem>

#include "core/dtype.h"

namespace lcmd {

// Seeds of the random components, offsets from the folder's seed (0 for Engine::load_random).
inline constexpr uint64_t kRandomTextEncoderSeed = 1, kRandomUNetSeed = 2, kRandomVaeSeed = 3, kRandomTaesdSeed = 4;

// like: a folder with model_index.json, scheduler/, text_encoder/config.json, unet/config.json,
// vae/config.json and tokenizer/ json files; vocab.json and merges.txt come from tokenizer_dir
// when given, else from like/tokenizer. out must not exist or be empty; it appears only when
// complete. dtype: F32 or F16.
void write_random_model(const std::filesystem::path& like, const std::filesystem::path& tokenizer_dir,
                        const std::filesystem::path& out, DType dtype, uint64_t seed);

}  // namespace lcmd
