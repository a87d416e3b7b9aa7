// The packed model file (`lcmd pack`): one file with every tensor the engine reads, already in
// the dtype it computes in, aligned for mmap, plus the configs and tokenizer files, so that
// loading is an mmap and a header parse. Layout (all integers little-endian):
//
//   [0, 64)          preamble: "LCMDPACK", u32 format version, u32 preamble size (64), zeros
//   [4096, ...)      the data section: tensors and embedded files, each 64-byte aligned
//   [header, +size)  the header: a JSON object (see below)
//   [end-80, end)    trailer: u64 data offset, u64 data size, u64 header offset, u64 header size,
//                    32 bytes sha256 of the header, u32 format version, u32 zero, "LCMDPACK"
//
// The trailer sits at the end so the writer streams tensors as the model walk produces them and
// writes the header last. The header's sha256 is checked at every open (a corrupt header is
// never parsed); the data section's sha256 is in the header, checked by verify_data() (reading
// 2 GB is what packing avoids at start-up, so it is on demand: `lcmd info --verify`).
//
// Header JSON:
//   {"format": "lcmd-packed-model", "version": 1, "created_by": "...", "source": "...",
//    "dtype": "auto", "pipeline_class": "...",
//    "configs": {"text_encoder": {...}, "unet": {...}, "vae": {...}, "scheduler": {...}},
//    "files": {"tokenizer/vocab.json": {"offset": N, "size": N}, ...},
//    "tensors": {"unet.conv_in.weight": {"dtype": "BF16", "shape": [...], "layout": "plain",
//                                        "offset": N, "size": N}, ...},
//    "data_sha256": "hex"}
// Offsets are from the start of the file. "layout" is "plain" (PyTorch's C order) or "blocked"
// (a convolution's or linear layer's weights in the layout its kernel computes on, described by
// the entry's "blocking" object, so loading uses them in place). Later layouts (int8 with
// scales) add values, and a reader refuses any it does not know, naming it, so old binaries
// never misread new files.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/mapped_file.h"
#include "core/tensor.h"

namespace lcmd {

constexpr uint32_t kPackedFormatVersion = 1;
constexpr const char* kPackedFormatName = "lcmd-packed-model";
constexpr const char* kPlainLayout = "plain";      // PyTorch's C order, size = numel x dtype size
constexpr const char* kBlockedLayout = "blocked";  // a layer's compute layout (ops::StoredWeights)

struct PackedTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::string layout;    // kPlainLayout or kBlockedLayout
  std::string blocking;  // kBlockedLayout: the layout as JSON text (checked by the layer using it)
  uint64_t offset;       // from the start of the file
  uint64_t size;         // bytes
};

class PackedModelFile {
 public:
  // True when the file starts with the packed model's magic (false for folders and other files).
  static bool is_packed(const std::filesystem::path& path);

  // Maps and validates the file: magic, version, trailer, header checksum, the header's JSON
  // schema, and every tensor's and file's extent (inside the data section, aligned, size =
  // numel x dtype size, no overlaps). Every error is a ModelError "<path>: <what>", e.g. a
  // truncated file, a foreign file, a newer format version.
  static PackedModelFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  const nlohmann::json& header() const { return header_; }
  // The component's config ("text_encoder", "unet", "vae", "scheduler"); ModelError when absent.
  const nlohmann::json& config(const std::string& component) const;
  bool has_config(const std::string& component) const;

  // An embedded file's bytes (e.g. "tokenizer/vocab.json"); ModelError when absent.
  std::string_view embedded_file(const std::string& name) const;
  bool has_embedded_file(const std::string& name) const { return files_.count(name) != 0; }

  const PackedTensor* find(const std::string& name) const;
  const std::vector<PackedTensor>& tensors() const { return tensors_; }
  const uint8_t* data(const PackedTensor& t) const { return file_.data() + t.offset; }
  // Drops the tensor's pages from memory once copied (see MappedFile::release).
  void release(const PackedTensor& t) const { file_.release(t.offset, t.size); }
  // A plain tensor as float32 (widened from F16/BF16); its shape must equal `expected`.
  Tensor load_f32(const std::string& name, const Shape& expected) const;
  uint64_t data_bytes() const { return data_size_; }

  // Has the kernel read the data section into the page cache in the background: loading touches
  // only the values at its end, the first image every byte, so from a cold cache (a Lambda cold
  // start) the reads run ahead of the compute. For the engine's load, not for `info`.
  void prefetch_data() const;

  // Recomputes the data section's sha256 and compares it with the header's; ModelError on mismatch.
  void verify_data() const;

 private:
  PackedModelFile() = default;

  MappedFile file_;
  nlohmann::json header_;
  uint64_t data_offset_ = 0, data_size_ = 0;
  std::vector<PackedTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> files_;  // name -> (offset, size)
};

// Streams a packed file: tensors and files as they come, then finish() writes the header and
// the trailer. Pair it with write_file_atomic so a failure never leaves a partial file.
class PackedModelWriter {
 public:
  explicit PackedModelWriter(std::ostream& out);
  ~PackedModelWriter();
  PackedModelWriter(const PackedModelWriter&) = delete;
  PackedModelWriter& operator=(const PackedModelWriter&) = delete;

  // Stores float32 values as `dtype` (F32, F16, BF16) in PyTorch's layout.
  void add_tensor(const std::string& name, const Shape& shape, const float* values, DType dtype);
  // Stores a layer's weights of PyTorch shape `shape` as they are in memory, in the compute
  // layout `blocking` describes (ops::StoredWeights).
  void add_blocked(const std::string& name, const Shape& shape, DType dtype, const std::string& blocking,
                   const void* data, size_t size);
  void add_file(const std::string& name, std::string_view bytes);
  bool has_tensor(const std::string& name) const { return tensors_.contains(name); }
  // `header` holds the caller's fields (configs, source, dtype, ...); the writer adds format,
  // version, files, tensors and data_sha256.
  void finish(nlohmann::json header);

 private:
  struct DataDigest;  // sha256 of the data section, updated as it is written

  void align();
  void write(const void* bytes, size_t n);

  std::ostream& out_;
  uint64_t position_ = 0;
  uint64_t data_offset_ = 0;
  std::unique_ptr<DataDigest> digest_;
  nlohmann::json tensors_ = nlohmann::json::object();
  nlohmann::json files_ = nlohmann::json::object();
  bool finished_ = false;
};

}  // namespace lcmd
