// The packed model reader (`lcmd pack` files) on arbitrary bytes. A file either opens or throws
// ModelError; when it opens, every tensor and embedded file lies inside the data section, plain
// tensors load, and layers stored in a compute layout either unpack (their layout describes data
// inside their bytes) or are refused with std::invalid_argument -- never a read past the data.
#include <cstdlib>

#include "core/error.h"
#include "fuzz_support.h"
#include "io/packed_model.h"
#include "ops/ops.h"

namespace {

void check(bool condition) {
  if (!condition) std::abort();  // an invariant the reader promises was broken: a finding
}

void exercise(const lcmd::PackedModelFile& file, size_t file_size) {
  for (const lcmd::PackedTensor& t : file.tensors()) {
    check(t.offset >= 4096 && t.offset <= file_size && t.size <= file_size - t.offset);
    if (t.layout == lcmd::kPlainLayout) {
      const lcmd::Tensor values = file.load_f32(t.name, t.shape);
      check(static_cast<size_t>(values.numel()) * lcmd::dtype_size(t.dtype) == t.size);
      continue;
    }
    try {
      lcmd::ops::unpack_stored_weights({t.blocking, file.data(t), t.size}, t.shape);
    } catch (const std::invalid_argument&) {
      // A layout that does not describe these bytes: refused, as a layer refuses it at load.
    }
  }
  for (const char* name : {"tokenizer/vocab.json", "tokenizer/merges.txt"})
    if (file.has_embedded_file(name)) {
      const std::string_view bytes = file.embedded_file(name);
      volatile char sink = 0;
      for (char c : bytes) sink = sink ^ c;
    }
  try {
    file.verify_data();
  } catch (const lcmd::ModelError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static lcmd::fuzz::MemoryFile input;
  const auto& path = input.write(data, size);
  try {
    const lcmd::PackedModelFile file = lcmd::PackedModelFile::open(path);
    exercise(file, size);
  } catch (const lcmd::ModelError&) {
    // The documented answer to a bad file.
  }
  return 0;
}
