// Reading and writing safetensors files (https://github.com/huggingface/safetensors):
//   8 bytes   little-endian u64 N, the header size
//   N bytes   UTF-8 JSON object: {"__metadata__": {str: str}?, "<name>": {"dtype": "F32",
//             "shape": [d0, ...], "data_offsets": [begin, end]}, ...}
//   the rest  the data section; [begin, end) are relative to its start.
// Files come from untrusted sources, so the header is validated as strictly as the reference Rust
// implementation does (see SafetensorsFile::open) before any tensor is touched.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"
#include "core/tensor.h"

namespace lcmd {

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  size_t offset;  // from the start of the file (not of the data section)
  size_t nbytes;
};

class SafetensorsFile {
 public:
  // Maps the file and validates its header. Every error is a ModelError "<path>: <what>" (naming
  // the tensor when there is one). Rejected, following the reference implementation:
  //  - a file shorter than 8 bytes; a header size over 100,000,000 bytes or past the end of file;
  //  - a header that is not a JSON object (or nests deeper than any real header, or repeats a name);
  //  - "__metadata__" that is not an object of strings;
  //  - an entry without "dtype" / "shape" / "data_offsets" or with the wrong JSON type, an unknown
  //    dtype, a negative or non-integer dimension, begin > end, or end - begin != numel x dtype size;
  //  - offsets past the end of the data section (a truncated file);
  //  - tensors that overlap, leave a gap, or do not cover the data section exactly to the end of
  //    the file (the reference implementation's MetadataIncompleteBuffer).
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* find(const std::string& name) const;
  // Throws ModelError "<path>: tensor '<name>' is missing".
  const TensorInfo& info(const std::string& name) const;
  // Every tensor, in the order of their data in the file.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // "__metadata__" (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor's bytes inside the mapping (no copy; little-endian, C order, possibly unaligned).
  // Valid as long as this object lives.
  const uint8_t* data(const TensorInfo& t) const;

  // Drops the tensor's pages from memory once its values have been copied (see MappedFile::release).
  void release(const TensorInfo& t) const { file_.release(t.offset, t.nbytes); }

  // The tensor as float32: F32 is copied, F16/BF16 widened exactly, F64 rounded to nearest.
  // Its stored shape must equal `expected`; errors name the file, the tensor, and the expected
  // vs actual shape and dtype. Integer and bool tensors are a ModelError.
  Tensor load_f32(const std::string& name, const Shape& expected) const;
  // Same, keeping whatever shape the file stores (for callers that inspect shapes themselves).
  Tensor load_f32_as_stored(const std::string& name) const;

  // Zero-copy view of an F32 tensor for callers that pack weights themselves. nullptr when the
  // stored dtype is not F32, or when its data is not 4-byte aligned in the file (possible in files
  // that mix dtypes carelessly); use load_f32 then. Throws like info() when the tensor is missing.
  const float* f32_data(const std::string& name) const;

 private:
  SafetensorsFile(MappedFile file, std::vector<TensorInfo> tensors, std::map<std::string, std::string> metadata);

  MappedFile file_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: float32 values converted to `dtype` (F32, F16 or BF16; round to nearest even).
struct TensorToWrite {
  std::string name;
  Shape shape;
  const float* values;  // shape_numel(shape) values
  DType dtype = DType::F32;
};

// Writes a standard safetensors file, atomically (see write_file_atomic). The header is compact
// JSON like the reference writer's: "__metadata__" first (when given), then the tensors sorted by
// name, each as {"dtype","shape","data_offsets"}, padded with spaces to a multiple of 8 bytes.
// The data follows in the order given. The reference writer orders data by dtype size, largest
// first, which keeps every tensor aligned to its element size; callers mixing F32 with F16/BF16
// should list the F32 tensors first to keep them zero-copy readable (see f32_data).
// Bad arguments (duplicate or reserved names, other dtypes, negative dims, null values) throw
// InputError naming the file and the tensor; I/O failures throw std::system_error.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace lcmd
