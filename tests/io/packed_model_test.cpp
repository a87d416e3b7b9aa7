// The packed model file: what the writer stores reads back exactly, aligned for mmap; every
// damaged or hostile file (truncated, foreign, newer version, corrupt header or data, extents
// that overlap or leave the data section, unknown layouts) is a ModelError naming the file.
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <cstring>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "core/file_util.h"
#include "io/packed_model.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using test::expect_model_error;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_all(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A small packed file: an F32 matrix, a BF16 matrix, an F16 vector and an embedded text file.
fs::path write_sample(const fs::path& path) {
  write_file_atomic(path, [](std::ostream& os) {
    PackedModelWriter w(os);
    const std::vector<float> a{1.0f, -2.5f, 3.25f, 0.1f, 5.0f, -6.0f};
    const std::vector<float> b{0.1f, 0.2f, 0.3f, 0.4f};
    const std::vector<float> c{65504.0f, -1.0f / 3};
    w.add_tensor("unet.a.weight", {2, 3}, a.data(), DType::F32);
    w.add_file("tokenizer/merges.txt", "#version: 0.2\na b\n");
    w.add_tensor("unet.b.weight", {2, 2}, b.data(), DType::BF16);
    w.add_tensor("vae.c.bias", {2}, c.data(), DType::F16);
    w.finish({{"configs", {{"unet", {{"sample_size", 32}}}}}});
  });
  return path;
}

void expect_open_fails(const fs::path& path, std::vector<std::string> needles) {
  needles.push_back(path.string());
  expect_model_error([&] { PackedModelFile::open(path); }, needles);
}

// The file with its header replaced by `header` (a crafted one), with a matching trailer and
// checksum, so only the header's content is wrong.
std::string with_header(const std::string& file, const std::string& header) {
  uint64_t data_offset, data_size;
  const char* trailer = file.data() + file.size() - 80;
  std::memcpy(&data_offset, trailer, 8);
  std::memcpy(&data_size, trailer + 8, 8);
  std::string out = file.substr(0, data_offset + data_size) + header;
  std::string t(trailer, 80);
  const uint64_t header_offset = data_offset + data_size, header_size = header.size();
  std::memcpy(t.data() + 16, &header_offset, 8);
  std::memcpy(t.data() + 24, &header_size, 8);
  SHA256(reinterpret_cast<const unsigned char*>(header.data()), header.size(), reinterpret_cast<unsigned char*>(t.data() + 32));
  return out + t;
}

nlohmann::json header_of(const fs::path& path) { return PackedModelFile::open(path).header(); }

TEST(PackedModel, RoundTripsTensorsFilesAndConfigs) {
  test::TempDir dir;
  const fs::path path = write_sample(dir.path() / "m.lcmd");
  EXPECT_TRUE(PackedModelFile::is_packed(path));
  const PackedModelFile f = PackedModelFile::open(path);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.config("unet")["sample_size"], 32);
  EXPECT_FALSE(f.has_config("vae"));
  EXPECT_EQ(f.embedded_file("tokenizer/merges.txt"), "#version: 0.2\na b\n");

  const Tensor a = f.load_f32("unet.a.weight", {2, 3});
  EXPECT_EQ(std::vector<float>(a.data(), a.data() + 6), (std::vector<float>{1.0f, -2.5f, 3.25f, 0.1f, 5.0f, -6.0f}));
  const Tensor b = f.load_f32("unet.b.weight", {2, 2});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(b.data()[i], bf16_to_f32(f32_to_bf16(0.1f * (i + 1))));
  const Tensor c = f.load_f32("vae.c.bias", {2});
  EXPECT_EQ(c.data()[0], 65504.0f);
  EXPECT_EQ(c.data()[1], f16_to_f32(f32_to_f16(-1.0f / 3)));
  for (const PackedTensor& t : f.tensors()) {
    EXPECT_EQ(t.offset % 64, 0u) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.data(t)) % 64, 0u) << t.name;
  }
  EXPECT_NO_THROW(f.verify_data());
  expect_model_error([&] { f.load_f32("unet.a.weight", {3, 2}); }, {"unet.a.weight", "[2, 3]", "[3, 2]"});
  expect_model_error([&] { f.load_f32("unet.missing", {1}); }, {"unet.missing", "missing"});
  expect_model_error([&] { f.config("vae"); }, {"vae"});
  expect_model_error([&] { f.embedded_file("tokenizer/vocab.json"); }, {"tokenizer/vocab.json"});
}

TEST(PackedModel, TruncatedFilesAreRejectedAtEveryLength) {
  test::TempDir dir;
  const std::string whole = read_all(write_sample(dir.path() / "m.lcmd"));
  const fs::path cut = dir.path() / "cut.lcmd";
  for (size_t length : {size_t{0}, size_t{7}, size_t{63}, size_t{4096}, size_t{4200}, whole.size() / 2, whole.size() - 81,
                        whole.size() - 1}) {
    write_all(cut, whole.substr(0, length));
    SCOPED_TRACE(length);
    expect_model_error([&] { PackedModelFile::open(cut); }, {cut.string()});
  }
  write_all(cut, whole.substr(0, whole.size() - 1));
  expect_open_fails(cut, {"truncated"});
}

TEST(PackedModel, ForeignFilesAndNewerVersionsAreRejected) {
  test::TempDir dir;
  const fs::path st = dir.path() / "model.safetensors";
  const float v = 1;
  write_safetensors(st, {{"x", {1}, &v, DType::F32}});
  EXPECT_FALSE(PackedModelFile::is_packed(st));
  expect_open_fails(st, {"not an lcmd packed model"});

  std::string bytes = read_all(write_sample(dir.path() / "m.lcmd"));
  bytes[8] = 2;  // format version 2
  const fs::path newer = dir.path() / "newer.lcmd";
  write_all(newer, bytes);
  expect_open_fails(newer, {"version 2", "reads version 1"});
}

TEST(PackedModel, CorruptHeaderOrDataIsDetected) {
  test::TempDir dir;
  const fs::path path = write_sample(dir.path() / "m.lcmd");
  std::string bytes = read_all(path);
  uint64_t header_offset;
  std::memcpy(&header_offset, bytes.data() + bytes.size() - 80 + 16, 8);

  std::string bad_header = bytes;
  bad_header[header_offset + 3] ^= 0x20;
  const fs::path p1 = dir.path() / "header.lcmd";
  write_all(p1, bad_header);
  expect_open_fails(p1, {"checksum"});

  std::string bad_data = bytes;
  bad_data[4096 + 5] ^= 0x01;  // inside the first tensor: the header still opens
  const fs::path p2 = dir.path() / "data.lcmd";
  write_all(p2, bad_data);
  const PackedModelFile f = PackedModelFile::open(p2);
  expect_model_error([&] { f.verify_data(); }, {p2.string(), "sha256", "corrupt"});
}

TEST(PackedModel, HostileHeadersAreRejected) {
  test::TempDir dir;
  const fs::path path = write_sample(dir.path() / "m.lcmd");
  const std::string bytes = read_all(path);
  const nlohmann::json good = header_of(path);
  const fs::path bad = dir.path() / "bad.lcmd";
  auto expect_rejected = [&](const std::function<void(nlohmann::json&)>& edit, const std::vector<std::string>& needles) {
    nlohmann::json h = good;
    edit(h);
    write_all(bad, with_header(bytes, h.dump()));
    expect_open_fails(bad, needles);
  };
  expect_rejected([](auto& h) { h["tensors"]["unet.b.weight"]["offset"] = h["tensors"]["unet.a.weight"]["offset"]; },
                  {"overlap"});
  expect_rejected([](auto& h) { h["tensors"]["unet.a.weight"]["offset"] = 1ull << 40; }, {"unet.a.weight", "outside"});
  expect_rejected([](auto& h) { h["tensors"]["unet.a.weight"]["offset"] = 4096 + 8; }, {"unet.a.weight", "aligned"});
  expect_rejected([](auto& h) { h["tensors"]["unet.a.weight"]["size"] = 20; }, {"unet.a.weight", "bytes do not match"});
  expect_rejected([](auto& h) { h["tensors"]["unet.a.weight"]["dtype"] = "I64"; }, {"unet.a.weight", "dtype"});
  expect_rejected([](auto& h) { h["tensors"]["unet.a.weight"]["shape"] = {-2, 3}; }, {"unet.a.weight", "dimension"});
  expect_rejected([](auto& h) { h["tensors"]["unet.a.weight"]["layout"] = "dnnl:OIhw16i16o"; },
                  {"unet.a.weight", "dnnl:OIhw16i16o", "does not know"});
  expect_rejected([](auto& h) { h["files"]["tokenizer/merges.txt"]["size"] = 1ull << 50; }, {"merges.txt", "outside"});
  expect_rejected([](auto& h) { h.erase("tensors"); }, {"\"tensors\""});
  expect_rejected([](auto& h) { h["format"] = "something else"; }, {"not an lcmd packed model header"});
  write_all(bad, with_header(bytes, "{not json"));
  expect_open_fails(bad, {"not an lcmd packed model header"});
}

}  // namespace
}  // namespace lcmd
