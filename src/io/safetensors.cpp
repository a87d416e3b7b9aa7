#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <ostream>
#include <unordered_set>
#include <utility>

#include "core/error.h"
#include "core/file_util.h"

namespace lcmd {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader uses it in place");

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kLengthPrefixBytes = 8;
// The reference implementation's MAX_HEADER_SIZE; also bounds the memory the JSON parse can take.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three levels (root, entry, shape); anything deeper is not a safetensors
// header, and refusing it early keeps hostile input from building huge nested values.
constexpr int kMaxJsonDepth = 16;
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kSupportedDtypes = "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL";

[[noreturn]] void fail(const fs::path& path, const std::string& what) {
  throw ModelError(path.string() + ": " + what);
}

[[noreturn]] void fail_tensor(const fs::path& path, const std::string& name, const std::string& what) {
  fail(path, "tensor '" + name + "': " + what);
}

std::string range_str(uint64_t begin, uint64_t end) {
  std::string s = "[";
  s += std::to_string(begin);
  s += ", ";
  s += std::to_string(end);
  s += ")";
  return s;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Parses the header bytes into JSON, refusing deep nesting and names that occur twice (the last
// one would silently win otherwise).
json parse_header_json(const fs::path& path, const uint8_t* bytes, size_t size) {
  std::unordered_set<std::string> top_level_keys;
  const json::parser_callback_t guard = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      fail(path, "header nests deeper than " + std::to_string(kMaxJsonDepth) + " levels; not a safetensors header");
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string() &&
        !top_level_keys.insert(parsed.get<std::string>()).second)
      fail(path, "header names '" + parsed.get<std::string>() + "' twice");
    return true;
  };
  try {
    return json::parse(bytes, bytes + size, guard);
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
}

std::map<std::string, std::string> parse_metadata(const fs::path& path, const json& value) {
  std::map<std::string, std::string> metadata;
  if (value.is_null()) return metadata;  // the reference reader treats null as absent
  if (!value.is_object())
    fail(path, std::string("\"__metadata__\" must be an object of strings, got ") + value.type_name());
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string())
      fail(path, "\"__metadata__\" entry '" + key + "' must be a string, got " + v.type_name());
    metadata.emplace(key, v.get<std::string>());
  }
  return metadata;
}

const json& required_field(const fs::path& path, const std::string& name, const json& entry, const char* field) {
  const auto it = entry.find(field);
  if (it == entry.end()) fail_tensor(path, name, std::string("missing \"") + field + "\"");
  return *it;
}

DType parse_entry_dtype(const fs::path& path, const std::string& name, const json& entry) {
  const json& value = required_field(path, name, entry, "dtype");
  if (!value.is_string())
    fail_tensor(path, name, std::string("\"dtype\" must be a string, got ") + value.type_name());
  DType dtype;
  if (!parse_dtype(value.get<std::string>(), &dtype))
    fail_tensor(path, name, "unknown dtype '" + value.get<std::string>() + "' (supported: " + kSupportedDtypes + ")");
  return dtype;
}

Shape parse_entry_shape(const fs::path& path, const std::string& name, const json& entry) {
  const json& value = required_field(path, name, entry, "shape");
  if (!value.is_array())
    fail_tensor(path, name, std::string("\"shape\" must be an array of integers, got ") + value.type_name());
  Shape shape;
  for (const json& d : value) {
    if (d.is_number_integer() && !d.is_number_unsigned())
      fail_tensor(path, name, "\"shape\" " + value.dump() + " has a negative dimension");
    if (!d.is_number_unsigned())
      fail_tensor(path, name, "\"shape\" " + value.dump() + " must hold non-negative integers");
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail_tensor(path, name, "\"shape\" " + value.dump() + " has a dimension too large");
    shape.push_back(static_cast<int64_t>(dim));
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_entry_offsets(const fs::path& path, const std::string& name, const json& entry) {
  const json& value = required_field(path, name, entry, "data_offsets");
  if (!value.is_array() || value.size() != 2 || !value[0].is_number_unsigned() || !value[1].is_number_unsigned())
    fail_tensor(path, name, "\"data_offsets\" must be [begin, end] with non-negative integers, got " + value.dump());
  const uint64_t begin = value[0].get<uint64_t>(), end = value[1].get<uint64_t>();
  if (begin > end) fail_tensor(path, name, "\"data_offsets\" " + range_str(begin, end) + " ends before it begins");
  return {begin, end};
}

// numel x element size, or fails when that does not fit in 64 bits.
uint64_t checked_byte_size(const fs::path& path, const std::string& name, const Shape& shape, DType dtype) {
  uint64_t bytes = dtype_size(dtype);
  for (int64_t d : shape)
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes))
      fail_tensor(path, name, "shape " + shape_str(shape) + " is too large to address");
  return bytes;
}

TensorInfo parse_tensor_entry(const fs::path& path, const std::string& name, const json& entry, size_t data_start,
                              uint64_t data_size) {
  if (!entry.is_object()) fail_tensor(path, name, std::string("entry must be an object, got ") + entry.type_name());
  TensorInfo t;
  t.name = name;
  t.dtype = parse_entry_dtype(path, name, entry);
  t.shape = parse_entry_shape(path, name, entry);
  const auto [begin, end] = parse_entry_offsets(path, name, entry);
  const uint64_t expected_bytes = checked_byte_size(path, name, t.shape, t.dtype);
  if (end - begin != expected_bytes)
    fail_tensor(path, name,
                "byte size mismatch: shape " + shape_str(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
                    std::to_string(expected_bytes) + " bytes, but data_offsets " + range_str(begin, end) + " hold " +
                    std::to_string(end - begin));
  if (end > data_size)
    fail_tensor(path, name,
                "data_offsets " + range_str(begin, end) + " reach past the end of the data section (" +
                    std::to_string(data_size) + " bytes); is the file truncated?");
  t.offset = data_start + static_cast<size_t>(begin);
  t.nbytes = static_cast<size_t>(expected_bytes);
  return t;
}

// Sorts by data position and requires the tensors to tile the data section exactly: no overlap,
// no gap, nothing after the last one. The reference reader requires the same.
void check_data_layout(const fs::path& path, std::vector<TensorInfo>& tensors, size_t data_start, uint64_t data_size) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::pair(a.offset, a.nbytes) < std::pair(b.offset, b.nbytes);
  });
  size_t covered_to = data_start;  // file offset up to which the data section is accounted for
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    const auto relative = [&](const TensorInfo& x) {
      return range_str(x.offset - data_start, x.offset - data_start + x.nbytes);
    };
    if (t.offset < covered_to)
      fail_tensor(path, t.name,
                  "data_offsets " + relative(t) + " overlap tensor '" + previous->name + "' at " + relative(*previous));
    if (t.offset > covered_to)
      fail_tensor(path, t.name,
                  "data_offsets " + relative(t) + " leave bytes " +
                      range_str(covered_to - data_start, t.offset - data_start) +
                      " of the data section unused (safetensors requires the tensors to cover it exactly)");
    covered_to = t.offset + t.nbytes;
    previous = &t;
  }
  const uint64_t covered = covered_to - data_start;
  if (covered != data_size)
    fail(path, "the data section has " + std::to_string(data_size) + " bytes but the tensors cover only " +
                   std::to_string(covered) + " (trailing bytes after the last tensor)");
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  MappedFile file(path);
  if (file.size() < kLengthPrefixBytes)
    fail(path, "file is " + std::to_string(file.size()) + " bytes, shorter than the 8-byte header size");
  const uint64_t header_size = read_u64_le(file.data());
  if (header_size > kMaxHeaderBytes)
    fail(path, "header size " + std::to_string(header_size) + " exceeds the " + std::to_string(kMaxHeaderBytes) +
                   "-byte limit; not a safetensors file?");
  if (header_size > file.size() - kLengthPrefixBytes)
    fail(path, "header size " + std::to_string(header_size) + " reaches past the end of the " +
                   std::to_string(file.size()) + "-byte file");
  const size_t data_start = kLengthPrefixBytes + static_cast<size_t>(header_size);
  const uint64_t data_size = file.size() - data_start;

  const json header = parse_header_json(path, file.data() + kLengthPrefixBytes, static_cast<size_t>(header_size));
  if (!header.is_object()) fail(path, std::string("header must be a JSON object, got ") + header.type_name());

  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> tensors;
  tensors.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey)
      metadata = parse_metadata(path, entry);
    else
      tensors.push_back(parse_tensor_entry(path, name, entry, data_start, data_size));
  }
  check_data_layout(path, tensors, data_start, data_size);
  return SafetensorsFile(std::move(file), std::move(tensors), std::move(metadata));
}

SafetensorsFile::SafetensorsFile(MappedFile file, std::vector<TensorInfo> tensors,
                                 std::map<std::string, std::string> metadata)
    : file_(std::move(file)), tensors_(std::move(tensors)), metadata_(std::move(metadata)) {
  index_.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  if (const TensorInfo* t = find(name)) return *t;
  fail(path(), "tensor '" + name + "' is missing");
}

const uint8_t* SafetensorsFile::data(const TensorInfo& t) const {
  // A TensorInfo of another file could point anywhere; never hand out memory outside the mapping.
  if (t.offset > file_.size() || t.nbytes > file_.size() - t.offset)
    fail(path(), "tensor '" + t.name + "' does not belong to this file");
  return file_.data() + t.offset;
}

Tensor SafetensorsFile::load_f32(const std::string& name, const Shape& expected) const {
  const TensorInfo& t = info(name);
  if (t.shape != expected)
    fail(path(), "tensor '" + name + "' has shape " + shape_str(t.shape) + " (" + dtype_name(t.dtype) + "), expected " +
                     shape_str(expected));
  return load_f32_as_stored(name);
}

Tensor SafetensorsFile::load_f32_as_stored(const std::string& name) const {
  const TensorInfo& t = info(name);
  if (!is_float_dtype(t.dtype))
    fail(path(), "tensor '" + name + "' is " + dtype_name(t.dtype) + " " + shape_str(t.shape) +
                     ", expected a float dtype (F32, F16, BF16 or F64)");
  Tensor out = Tensor::transient(t.shape);  // callers pack it and drop it
  convert_to_f32(data(t), t.dtype, out.numel(), out.data());
  return out;
}

const float* SafetensorsFile::f32_data(const std::string& name) const {
  const TensorInfo& t = info(name);
  const uint8_t* p = data(t);
  if (t.dtype != DType::F32 || reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) return nullptr;
  return reinterpret_cast<const float*>(p);
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

[[noreturn]] void bad_argument(const fs::path& path, const std::string& name, const std::string& what) {
  throw InputError(path.string() + ": cannot write tensor '" + name + "': " + what);
}

// Checks what the caller passes and returns each tensor's byte size, in the given order.
std::vector<uint64_t> checked_write_sizes(const fs::path& path, const std::vector<TensorToWrite>& tensors) {
  std::unordered_set<std::string> names;
  std::vector<uint64_t> sizes;
  for (const TensorToWrite& t : tensors) {
    if (t.name == kMetadataKey) bad_argument(path, t.name, "the name is reserved for the file's metadata");
    if (!names.insert(t.name).second) bad_argument(path, t.name, "the name occurs twice");
    if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
      bad_argument(path, t.name, std::string("cannot store dtype ") + dtype_name(t.dtype) + " (F32, F16 or BF16)");
    uint64_t bytes = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) bad_argument(path, t.name, "shape " + shape_str(t.shape) + " has a negative dimension");
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes))
        bad_argument(path, t.name, "shape " + shape_str(t.shape) + " is too large");
    }
    if (bytes > 0 && t.values == nullptr) bad_argument(path, t.name, "no values given");
    sizes.push_back(bytes);
  }
  return sizes;
}

// A JSON string literal; tensor names and metadata must be valid UTF-8.
std::string json_string(const fs::path& path, const std::string& s) {
  try {
    return json(s).dump();
  } catch (const json::exception&) {
    throw InputError(path.string() + ": cannot write '" + s + "': names and metadata must be valid UTF-8");
  }
}

std::string json_array(const std::vector<uint64_t>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(values[i]);
  }
  s += "]";
  return s;
}

// The header text, compact like serde_json's output and padded with spaces to a multiple of 8
// so that the data section starts 8-byte aligned.
std::string build_header(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                         const std::vector<uint64_t>& sizes, const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<uint64_t, uint64_t>> offsets;
  uint64_t position = 0;
  for (uint64_t bytes : sizes) {
    offsets.emplace_back(position, position + bytes);
    position += bytes;
  }
  std::vector<size_t> by_name(tensors.size());
  for (size_t i = 0; i < by_name.size(); ++i) by_name[i] = i;
  std::sort(by_name.begin(), by_name.end(), [&](size_t a, size_t b) { return tensors[a].name < tensors[b].name; });

  std::string header = "{";
  if (!metadata.empty()) {
    header += json_string(path, kMetadataKey) + ":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) header += ",";
      header += json_string(path, key);
      header += ":";
      header += json_string(path, value);
      first = false;
    }
    header += "}";
  }
  for (size_t i : by_name) {
    const TensorToWrite& t = tensors[i];
    std::vector<uint64_t> dims(t.shape.begin(), t.shape.end());
    if (header.size() > 1) header += ",";
    header += json_string(path, t.name) + ":{\"dtype\":\"" + dtype_name(t.dtype) + "\",\"shape\":" + json_array(dims) +
              ",\"data_offsets\":" + json_array({offsets[i].first, offsets[i].second}) + "}";
  }
  header += "}";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  if (header.size() > kMaxHeaderBytes)
    throw InputError(path.string() + ": the header would be " + std::to_string(header.size()) +
                     " bytes, over the format's " + std::to_string(kMaxHeaderBytes) + "-byte limit");
  return header;
}

void write_tensor_data(std::ostream& out, const TensorToWrite& t) {
  const int64_t n = shape_numel(t.shape);
  if (t.dtype == DType::F32) {
    out.write(reinterpret_cast<const char*>(t.values), static_cast<std::streamsize>(n * sizeof(float)));
    return;
  }
  // Narrow in chunks so a large tensor never needs a second full-size buffer.
  constexpr int64_t kChunk = 1 << 15;
  std::vector<uint16_t> chunk(static_cast<size_t>(std::min(n, kChunk)));
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    for (int64_t i = 0; i < count; ++i)
      chunk[i] = t.dtype == DType::F16 ? f32_to_f16(t.values[start + i]) : f32_to_bf16(t.values[start + i]);
    out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(count * 2));
  }
}

}  // namespace

void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::vector<uint64_t> sizes = checked_write_sizes(path, tensors);
  const std::string header = build_header(path, tensors, sizes, metadata);
  write_file_atomic(path, [&](std::ostream& out) {
    const uint64_t header_size = header.size();
    out.write(reinterpret_cast<const char*>(&header_size), sizeof header_size);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const TensorToWrite& t : tensors) write_tensor_data(out, t);
  });
}

}  // namespace lcmd
