#include "io/packed_model.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <memory>

#include "core/error.h"

namespace lcmd {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'L', 'C', 'M', 'D', 'P', 'A', 'C', 'K'};
constexpr uint64_t kPreambleBytes = 64;
constexpr uint64_t kDataStart = 4096;  // a page: the data section maps page-aligned
constexpr uint64_t kTrailerBytes = 80;
constexpr uint64_t kAlignment = 64;    // every tensor and file: AVX-512 loads, oneDNN's buffers
constexpr uint64_t kMaxHeaderBytes = 256ull << 20;

[[noreturn]] void fail(const fs::path& path, const std::string& what) { throw ModelError(path.string() + ": " + what); }

uint64_t read_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
uint32_t read_u32(const uint8_t* p) { return static_cast<uint32_t>(p[0] | p[1] << 8 | p[2] << 16 | uint32_t{p[3]} << 24); }
void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

struct Sha256 {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  Sha256() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw std::runtime_error("sha256: OpenSSL init failed");
  }
  void update(const void* p, size_t n) { EVP_DigestUpdate(ctx.get(), p, n); }
  std::array<uint8_t, 32> digest() {
    std::array<uint8_t, 32> out{};
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), out.data(), &len);
    return out;
  }
};

std::string to_hex(const std::array<uint8_t, 32>& d) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) s += digits[b >> 4], s += digits[b & 15];
  return s;
}

// A JSON unsigned integer field, or a ModelError naming it.
uint64_t unsigned_field(const fs::path& path, const nlohmann::json& entry, const char* field, const std::string& owner) {
  auto it = entry.find(field);
  if (it == entry.end() || !it->is_number_unsigned())
    fail(path, owner + ": \"" + field + "\" is missing or not a non-negative integer");
  return it->get<uint64_t>();
}

// Checks that [offset, offset + size) lies in the data section and is aligned.
void check_extent(const fs::path& path, uint64_t offset, uint64_t size, uint64_t data_offset, uint64_t data_size,
                  const std::string& owner) {
  if (offset % kAlignment != 0) fail(path, owner + " is not " + std::to_string(kAlignment) + "-byte aligned");
  if (offset < data_offset || offset - data_offset > data_size || size > data_size - (offset - data_offset))
    fail(path, owner + " lies outside the data section (offset " + std::to_string(offset) + ", " + std::to_string(size) +
                   " bytes; the data section is [" + std::to_string(data_offset) + ", " +
                   std::to_string(data_offset + data_size) + "))");
}

PackedTensor parse_tensor(const fs::path& path, const std::string& name, const nlohmann::json& e) {
  const std::string owner = "tensor '" + name + "'";
  if (!e.is_object()) fail(path, owner + ": entry is not an object");
  PackedTensor t{name, DType::F32, {}, "", "", 0, 0};
  auto dtype = e.find("dtype");
  if (dtype == e.end() || !dtype->is_string() || !parse_dtype(dtype->get<std::string>(), &t.dtype) ||
      !is_float_dtype(t.dtype))
    fail(path, owner + ": \"dtype\" must be F32, F16 or BF16");
  auto layout = e.find("layout");
  if (layout == e.end() || !layout->is_string()) fail(path, owner + ": \"layout\" is missing");
  t.layout = layout->get<std::string>();
  if (t.layout != kPlainLayout && t.layout != kBlockedLayout)
    fail(path, owner + " has layout \"" + t.layout + "\", which this lcmd does not know (a newer packer?)");
  if (t.layout == kBlockedLayout) {
    auto blocking = e.find("blocking");
    if (blocking == e.end() || !blocking->is_object()) fail(path, owner + ": \"blocking\" must be an object");
    t.blocking = blocking->dump();
  }
  auto shape = e.find("shape");
  if (shape == e.end() || !shape->is_array()) fail(path, owner + ": \"shape\" must be an array");
  uint64_t numel = 1;
  for (const auto& d : *shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 40)) fail(path, owner + ": a dimension is not a valid size");
    numel *= d.get<uint64_t>();
    if (numel > (1ull << 40)) fail(path, owner + ": too many elements");
    t.shape.push_back(d.get<int64_t>());
  }
  t.offset = unsigned_field(path, e, "offset", owner);
  t.size = unsigned_field(path, e, "size", owner);
  if (t.layout == kPlainLayout && t.size != numel * dtype_size(t.dtype))
    fail(path, owner + ": " + std::to_string(t.size) + " bytes do not match " + dtype_name(t.dtype) + " " +
                   shape_str(t.shape));
  return t;
}

}  // namespace

bool PackedModelFile::is_packed(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  return in && in.read(magic, sizeof magic) && std::memcmp(magic, kMagic, sizeof magic) == 0;
}

PackedModelFile PackedModelFile::open(const fs::path& path) {
  PackedModelFile f;
  f.file_ = MappedFile(path);
  const uint8_t* p = f.file_.data();
  const uint64_t n = f.file_.size();
  if (n < kPreambleBytes || std::memcmp(p, kMagic, sizeof kMagic) != 0)
    fail(path, "not an lcmd packed model (no LCMDPACK signature at the start)");
  const uint32_t version = read_u32(p + 8);
  if (version != kPackedFormatVersion)
    fail(path, "packed format version " + std::to_string(version) + "; this lcmd reads version " +
                   std::to_string(kPackedFormatVersion) + " (repack the model with this lcmd)");
  if (n < kDataStart + kTrailerBytes || std::memcmp(p + n - 8, kMagic, sizeof kMagic) != 0)
    fail(path, "truncated packed model (" + std::to_string(n) + " bytes; its trailer is missing)");
  const uint8_t* trailer = p + n - kTrailerBytes;
  f.data_offset_ = read_u64(trailer);
  f.data_size_ = read_u64(trailer + 8);
  const uint64_t header_offset = read_u64(trailer + 16), header_size = read_u64(trailer + 24);
  if (f.data_offset_ != kDataStart || f.data_size_ > n || header_size > kMaxHeaderBytes ||
      header_offset != f.data_offset_ + f.data_size_ || header_offset + header_size != n - kTrailerBytes)
    fail(path, "corrupt packed model: the trailer's offsets do not describe this file");
  Sha256 sha;
  sha.update(p + header_offset, header_size);
  if (sha.digest() != [&] { std::array<uint8_t, 32> d{}; std::memcpy(d.data(), trailer + 32, 32); return d; }())
    fail(path, "corrupt packed model: the header's checksum does not match");
  f.header_ = nlohmann::json::parse(p + header_offset, p + header_offset + header_size, nullptr, false);
  const nlohmann::json& h = f.header_;
  if (!h.is_object() || h.value("format", "") != kPackedFormatName)
    fail(path, "corrupt packed model: the header is not an lcmd packed model header");
  for (const char* key : {"configs", "files", "tensors"})
    if (!h.contains(key) || !h[key].is_object()) fail(path, std::string("packed model header: \"") + key + "\" is missing");
  if (!h.contains("data_sha256") || !h["data_sha256"].is_string())
    fail(path, "packed model header: \"data_sha256\" is missing");

  for (const auto& [name, e] : h["tensors"].items()) {
    PackedTensor t = parse_tensor(path, name, e);
    check_extent(path, t.offset, t.size, f.data_offset_, f.data_size_, "tensor '" + name + "'");
    f.index_[name] = f.tensors_.size();
    f.tensors_.push_back(std::move(t));
  }
  for (const auto& [name, e] : h["files"].items()) {
    if (!e.is_object()) fail(path, "file '" + name + "': entry is not an object");
    const uint64_t offset = unsigned_field(path, e, "offset", "file '" + name + "'");
    const uint64_t size = unsigned_field(path, e, "size", "file '" + name + "'");
    check_extent(path, offset, size, f.data_offset_, f.data_size_, "file '" + name + "'");
    f.files_[name] = {offset, size};
  }
  // No two extents may overlap: a crafted header could otherwise alias one tensor with another.
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  for (const PackedTensor& t : f.tensors_) extents.emplace_back(t.offset, t.size);
  for (const auto& [name, e] : f.files_) extents.push_back(e);
  std::sort(extents.begin(), extents.end());
  for (size_t i = 1; i < extents.size(); ++i)
    if (extents[i - 1].first + extents[i - 1].second > extents[i].first)
      fail(path, "corrupt packed model: two tensors or files overlap at offset " + std::to_string(extents[i].first));
  return f;
}

const nlohmann::json& PackedModelFile::config(const std::string& component) const {
  if (!has_config(component)) fail(path(), "the packed model has no " + component + " config");
  return header_["configs"][component];
}

bool PackedModelFile::has_config(const std::string& component) const {
  const nlohmann::json& configs = header_["configs"];
  return configs.contains(component) && configs[component].is_object();
}

std::string_view PackedModelFile::embedded_file(const std::string& name) const {
  auto it = files_.find(name);
  if (it == files_.end()) fail(path(), "the packed model has no embedded file " + name);
  return {reinterpret_cast<const char*>(file_.data() + it->second.first), it->second.second};
}

const PackedTensor* PackedModelFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor PackedModelFile::load_f32(const std::string& name, const Shape& expected) const {
  const PackedTensor* t = find(name);
  if (!t) fail(path(), "tensor '" + name + "' is missing");
  if (t->layout != kPlainLayout) fail(path(), "tensor '" + name + "' is stored in a layer's compute layout, not as values");
  if (t->shape != expected)
    fail(path(), "tensor '" + name + "' has shape " + shape_str(t->shape) + ", expected " + shape_str(expected));
  Tensor out = Tensor::transient(t->shape);
  convert_to_f32(data(*t), t->dtype, out.numel(), out.data());
  return out;
}

void PackedModelFile::prefetch_data() const { file_.prefetch(data_offset_, data_size_); }

void PackedModelFile::verify_data() const {
  Sha256 sha;
  sha.update(file_.data() + data_offset_, data_size_);
  const std::string actual = to_hex(sha.digest());
  const std::string expected = header_["data_sha256"].get<std::string>();
  if (actual != expected)
    fail(path(), "the data section's sha256 is " + actual + ", the header says " + expected +
                     " (the file is corrupt: copy or pack it again)");
}

// ---------------------------------------------------------------------------------------------

struct PackedModelWriter::DataDigest {
  Sha256 sha;
};

PackedModelWriter::PackedModelWriter(std::ostream& out) : out_(out), digest_(std::make_unique<DataDigest>()) {
  uint8_t preamble[kDataStart] = {};
  std::memcpy(preamble, kMagic, sizeof kMagic);
  put_u32(preamble + 8, kPackedFormatVersion);
  put_u32(preamble + 12, static_cast<uint32_t>(kPreambleBytes));
  out_.write(reinterpret_cast<const char*>(preamble), sizeof preamble);
  position_ = data_offset_ = kDataStart;
}

PackedModelWriter::~PackedModelWriter() = default;

void PackedModelWriter::write(const void* bytes, size_t n) {
  out_.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
  digest_->sha.update(bytes, n);
  position_ += n;
}

void PackedModelWriter::align() {
  static const uint8_t zeros[kAlignment] = {};
  if (position_ % kAlignment) write(zeros, kAlignment - position_ % kAlignment);
}

void PackedModelWriter::add_tensor(const std::string& name, const Shape& shape, const float* values, DType dtype) {
  if (tensors_.contains(name)) throw std::invalid_argument("packed model: tensor " + name + " added twice");
  align();
  const int64_t n = shape_numel(shape);
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * dtype_size(dtype));
  convert_from_f32(values, n, dtype, bytes.data());
  tensors_[name] = {{"dtype", dtype_name(dtype)}, {"shape", shape}, {"layout", kPlainLayout},
                    {"offset", position_}, {"size", bytes.size()}};
  write(bytes.data(), bytes.size());
}

void PackedModelWriter::add_blocked(const std::string& name, const Shape& shape, DType dtype, const std::string& blocking,
                                    const void* data, size_t size) {
  if (tensors_.contains(name)) throw std::invalid_argument("packed model: tensor " + name + " added twice");
  align();
  tensors_[name] = {{"dtype", dtype_name(dtype)}, {"shape", shape},           {"layout", kBlockedLayout},
                    {"blocking", nlohmann::json::parse(blocking)}, {"offset", position_}, {"size", size}};
  write(data, size);
}

void PackedModelWriter::add_file(const std::string& name, std::string_view bytes) {
  if (files_.contains(name)) throw std::invalid_argument("packed model: file " + name + " added twice");
  align();
  files_[name] = {{"offset", position_}, {"size", bytes.size()}};
  write(bytes.data(), bytes.size());
}

void PackedModelWriter::finish(nlohmann::json header) {
  if (finished_) throw std::logic_error("packed model: finish() called twice");
  finished_ = true;
  align();
  const uint64_t data_size = position_ - data_offset_;
  header["format"] = kPackedFormatName;
  header["version"] = kPackedFormatVersion;
  header["files"] = files_;
  header["tensors"] = tensors_;
  header["data_sha256"] = to_hex(digest_->sha.digest());
  const std::string text = header.dump();
  out_.write(text.data(), static_cast<std::streamsize>(text.size()));
  Sha256 header_sha;
  header_sha.update(text.data(), text.size());
  uint8_t trailer[kTrailerBytes] = {};
  put_u64(trailer, data_offset_);
  put_u64(trailer + 8, data_size);
  put_u64(trailer + 16, data_offset_ + data_size);
  put_u64(trailer + 24, text.size());
  const auto digest = header_sha.digest();
  std::memcpy(trailer + 32, digest.data(), digest.size());
  put_u32(trailer + 64, kPackedFormatVersion);
  std::memcpy(trailer + kTrailerBytes - 8, kMagic, sizeof kMagic);
  out_.write(reinterpret_cast<const char*>(trailer), sizeof trailer);
}

}  // namespace lcmd
