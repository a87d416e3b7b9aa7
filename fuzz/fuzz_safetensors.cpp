// The safetensors reader on arbitrary file bytes. A file either opens or throws ModelError; when
// it opens, every tensor it lists must lie inside the file, the tensors must tile the data
// section, and every float tensor must load (the bytes are read, so ASan sees any overrun).
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "fuzz_support.h"
#include "io/safetensors.h"

namespace {

void check(bool condition) {
  if (!condition) std::abort();  // an invariant the reader promises was broken: a finding
}

bool is_float(lcmd::DType d) {
  return d == lcmd::DType::F32 || d == lcmd::DType::F16 || d == lcmd::DType::BF16 || d == lcmd::DType::F64;
}

void exercise(const lcmd::SafetensorsFile& file, size_t file_size) {
  size_t end_of_previous = 0;
  for (const lcmd::TensorInfo& t : file.tensors()) {
    check(t.offset >= 8 && t.offset <= file_size && t.nbytes <= file_size - t.offset);
    check(end_of_previous == 0 || t.offset == end_of_previous);
    end_of_previous = t.offset + t.nbytes;
    check(file.find(t.name) != nullptr);
    const uint8_t* bytes = file.data(t);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ bytes[i];
    if (is_float(t.dtype)) {
      const lcmd::Tensor values = file.load_f32_as_stored(t.name);
      check(static_cast<size_t>(values.numel()) * lcmd::dtype_size(t.dtype) == t.nbytes);
      file.f32_data(t.name);
    } else {
      try {
        file.load_f32_as_stored(t.name);
        check(false);  // integer and bool tensors must be refused
      } catch (const lcmd::ModelError&) {
      }
    }
  }
  if (!file.tensors().empty()) check(end_of_previous == file_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static lcmd::fuzz::MemoryFile input;
  const auto& path = input.write(data, size);
  try {
    const lcmd::SafetensorsFile file = lcmd::SafetensorsFile::open(path);
    exercise(file, size);
  } catch (const lcmd::ModelError&) {
    // The documented answer to a bad file.
  }
  return 0;
}
