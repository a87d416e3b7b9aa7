// Damaging a copy of the golden tiny model, for the corrupt-model matrix (issue 6): the unit-level
// test (tests/io/corrupt_model_matrix_test.cpp) and the CLI one (tests/cli/corrupt_model_cli_test.cpp)
// build the same damaged folders. Everything is written under a TempDir; ../shared is only read.
// Header-only, because each test program compiles just its own folder and test_support.cpp.
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "support/test_support.h"

namespace lcmd::test::corrupt {

namespace fs = std::filesystem;
using nlohmann::json;

inline constexpr const char* kUnetWeights = "unet/diffusion_pytorch_model.safetensors";
inline constexpr const char* kVaeWeights = "vae/diffusion_pytorch_model.safetensors";
inline constexpr const char* kTextWeights = "text_encoder/model.safetensors";

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// A full copy of golden/tiny-lcm at <dir>/model (16 MB), returned.
inline fs::path copy_tiny_model(const fs::path& dir) {
  const fs::path model = dir / "model";
  fs::copy(golden_dir() / "tiny-lcm", model, fs::copy_options::recursive);
  return model;
}

// A safetensors file split into its header (parsed) and data section, and put back together.
struct SafetensorsParts {
  json header;
  std::string data;

  static SafetensorsParts read(const fs::path& path) {
    const std::string bytes = read_bytes(path);
    uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data(), 8);
    return {json::parse(bytes.substr(8, header_size)), bytes.substr(8 + header_size)};
  }
  // The header padded with spaces to a multiple of 8, as real writers do.
  void write(const fs::path& path) const {
    std::string text = header.dump();
    text.resize((text.size() + 7) / 8 * 8, ' ');
    const uint64_t size = text.size();
    std::string bytes(8, '\0');
    std::memcpy(bytes.data(), &size, 8);
    write_bytes(path, bytes + text + data);
  }
  uint64_t begin(const std::string& tensor) const { return header.at(tensor).at("data_offsets")[0].get<uint64_t>(); }
  uint64_t end(const std::string& tensor) const { return header.at(tensor).at("data_offsets")[1].get<uint64_t>(); }
};

// Rewrites the header of a safetensors file, keeping its data section byte for byte.
inline void edit_header(const fs::path& path, const std::function<void(json&)>& edit) {
  SafetensorsParts parts = SafetensorsParts::read(path);
  edit(parts.header);
  parts.write(path);
}

// Overwrites the first float32 value of a tensor (which must be stored as F32).
inline void set_first_value(const fs::path& path, const std::string& tensor, float value) {
  SafetensorsParts parts = SafetensorsParts::read(path);
  if (parts.header.at(tensor).at("dtype") != "F32") throw std::runtime_error(tensor + " is not F32");
  std::memcpy(parts.data.data() + parts.begin(tensor), &value, sizeof value);
  parts.write(path);
}

// Every float32 value of a tensor set to `value`.
inline void fill_tensor(const fs::path& path, const std::string& tensor, float value) {
  SafetensorsParts parts = SafetensorsParts::read(path);
  for (uint64_t at = parts.begin(tensor); at < parts.end(tensor); at += sizeof value)
    std::memcpy(parts.data.data() + at, &value, sizeof value);
  parts.write(path);
}

// Sets the little-endian u64 header length at the start of a file.
inline void set_header_length(const fs::path& path, uint64_t length) {
  std::string bytes = read_bytes(path);
  std::memcpy(bytes.data(), &length, 8);
  write_bytes(path, bytes);
}

inline void edit_json(const fs::path& path, const std::function<void(json&)>& edit) {
  json j = json::parse(read_bytes(path));
  edit(j);
  write_bytes(path, j.dump(2));
}

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
inline constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace lcmd::test::corrupt
