// SafetensorsFile on the real golden files, and write_safetensors round trips.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

fs::path unet_file() { return test::golden_dir() / "tiny-lcm/unet/diffusion_pytorch_model.safetensors"; }

uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// ---------------------------------------------------------------------------------------------
// Golden files

TEST(SafetensorsGolden, UnetFileHasEveryTensorAndItsMetadata) {
  const auto file = SafetensorsFile::open(unet_file());
  // 686 top-level keys in the header: 685 tensors plus "__metadata__".
  EXPECT_EQ(file.tensors().size(), 685u);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_FALSE(file.contains("__metadata__"));
  EXPECT_TRUE(file.contains("time_embedding.cond_proj.weight"));
  EXPECT_FALSE(file.contains("time_embedding.cond_proj.bias"));  // the w-embedding projection has no bias
  EXPECT_EQ(file.find("no.such.tensor"), nullptr);
  EXPECT_EQ(file.path(), unet_file());
}

// Shapes, offsets and values read with Python's struct/json from the file, independently of this code.
TEST(SafetensorsGolden, UnetTensorsHaveTheirShapesOffsetsAndValues) {
  const auto file = SafetensorsFile::open(unet_file());
  const size_t data_start = 8 + 78440;  // header size N = 78440
  struct Expected {
    const char* name;
    Shape shape;
    size_t begin;
    uint32_t first_bits[3];
    float last;
  };
  const Expected cases[] = {
      {"conv_in.bias", {32}, 0, {0xbc978f6b, 0x3e052114, 0xbde2b410}, -0.0660683736f},
      {"time_embedding.cond_proj.weight", {32, 32}, 2792464, {0xbd23b4ea, 0x3df3f9fd, 0xbc76d096}, 0.0193736628f},
      {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
       {32, 16}, 34832, {0x3cbca180, 0xbc9ca920, 0x3d96a560}, -0.111218214f},
      {"conv_out.weight", {4, 32, 3, 3}, 5008, {0x3d050227, 0x3c841a8f, 0xbd6d1a61}, -0.0170765761f},
      {"up_blocks.3.resnets.2.conv2.weight", {32, 32, 3, 3}, 6555536, {0x3d14e129, 0x3c92f87d, 0xbd6f8e97},
       0.0430865772f},
  };
  for (const Expected& c : cases) {
    SCOPED_TRACE(c.name);
    const TensorInfo& info = file.info(c.name);
    EXPECT_EQ(info.dtype, DType::F32);
    EXPECT_EQ(info.shape, c.shape);
    EXPECT_EQ(info.offset, data_start + c.begin);
    EXPECT_EQ(info.nbytes, static_cast<size_t>(shape_numel(c.shape)) * 4);
    const Tensor t = file.load_f32(c.name, c.shape);
    ASSERT_EQ(t.shape(), c.shape);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(f32_bits(t.data()[i]), c.first_bits[i]) << "element " << i;
    EXPECT_EQ(t.data()[t.numel() - 1], c.last);
  }
}

TEST(SafetensorsGolden, TensorsAreInFileOrderAndTileTheDataSection) {
  const auto file = SafetensorsFile::open(unet_file());
  size_t expected_offset = 8 + 78440;
  for (const TensorInfo& t : file.tensors()) {
    ASSERT_EQ(t.offset, expected_offset) << t.name;
    expected_offset += t.nbytes;
  }
  EXPECT_EQ(expected_offset, fs::file_size(unet_file()));
  EXPECT_EQ(file.tensors().front().name, "conv_in.bias");
}

TEST(SafetensorsGolden, LoadF32EqualsTheRawBytesForEveryTensor) {
  const auto file = SafetensorsFile::open(unet_file());
  const std::string raw = read_bytes(unet_file());  // read with a plain stream, not through the mapping
  for (const TensorInfo& info : file.tensors()) {
    const Tensor t = file.load_f32(info.name, info.shape);
    ASSERT_EQ(static_cast<size_t>(t.numel()) * 4, info.nbytes) << info.name;
    ASSERT_EQ(std::memcmp(t.data(), raw.data() + info.offset, info.nbytes), 0) << info.name;
    // The zero-copy view points at the same bytes inside the mapping.
    ASSERT_EQ(reinterpret_cast<const uint8_t*>(file.f32_data(info.name)), file.data(info)) << info.name;
  }
}

// golden/README.md: the fp16 LDM file holds the fp32 file's tensors rounded to fp16 (.half(),
// round to nearest even), except position_ids, which stays int64 in both.
TEST(SafetensorsGolden, Fp16LdmFileWidenedEqualsFp32FileRoundedToF16) {
  const auto f32_file = SafetensorsFile::open(test::golden_dir() / "tiny-lcm-ldm.safetensors");
  const auto f16_file = SafetensorsFile::open(test::golden_dir() / "tiny-lcm-ldm.fp16.safetensors");
  ASSERT_EQ(f32_file.tensors().size(), 966u);
  ASSERT_EQ(f16_file.tensors().size(), 966u);
  EXPECT_TRUE(f32_file.metadata().empty());
  size_t float_tensors = 0;
  for (const TensorInfo& info : f32_file.tensors()) {
    SCOPED_TRACE(info.name);
    const TensorInfo& half = f16_file.info(info.name);
    ASSERT_EQ(half.shape, info.shape);
    if (info.dtype != DType::F32) continue;
    ++float_tensors;
    ASSERT_EQ(half.dtype, DType::F16);
    EXPECT_EQ(f16_file.f32_data(info.name), nullptr);  // no zero-copy view of an F16 tensor
    const Tensor wide = f16_file.load_f32(info.name, info.shape);
    const float* ref = f32_file.f32_data(info.name);
    ASSERT_NE(ref, nullptr);
    for (int64_t i = 0; i < wide.numel(); ++i)
      ASSERT_EQ(f32_bits(wide.data()[i]), f32_bits(f16_to_f32(f32_to_f16(ref[i])))) << "element " << i;
  }
  EXPECT_EQ(float_tensors, 965u);
}

TEST(SafetensorsGolden, PositionIdsAreReadableAsRawInt64) {
  const char* name = "cond_stage_model.transformer.text_model.embeddings.position_ids";
  for (const char* file_name : {"tiny-lcm-ldm.safetensors", "tiny-lcm-ldm.fp16.safetensors"}) {
    SCOPED_TRACE(file_name);
    const auto file = SafetensorsFile::open(test::golden_dir() / file_name);
    const TensorInfo& info = file.info(name);
    EXPECT_EQ(info.dtype, DType::I64);
    EXPECT_EQ(info.shape, (Shape{1, 77}));
    ASSERT_EQ(info.nbytes, 77u * 8);
    const uint8_t* bytes = file.data(info);
    for (int64_t i = 0; i < 77; ++i) {
      int64_t v;
      std::memcpy(&v, bytes + 8 * i, 8);
      ASSERT_EQ(v, i);
    }
    EXPECT_EQ(file.f32_data(name), nullptr);
    EXPECT_THROW(file.load_f32(name, {1, 77}), ModelError);
  }
}

TEST(SafetensorsGolden, MovedFileKeepsItsMappingValid) {
  auto file = SafetensorsFile::open(unet_file());
  const float* before = file.f32_data("conv_in.bias");
  const SafetensorsFile moved = std::move(file);
  EXPECT_EQ(moved.f32_data("conv_in.bias"), before);
  EXPECT_EQ(f32_bits(moved.load_f32("conv_in.bias", {32}).data()[0]), 0xbc978f6bu);
}

// ---------------------------------------------------------------------------------------------
// Writing

// The reference implementation's own serialization test: one F32 tensor "attn.0" [1, 2, 3] = 0..5.
TEST(SafetensorsWrite, MatchesTheReferenceWritersBytes) {
  test::TempDir dir;
  const fs::path path = dir.path() / "ref.safetensors";
  const float values[6] = {0, 1, 2, 3, 4, 5};
  write_safetensors(path, {{"attn.0", {1, 2, 3}, values}});
  std::string expected("\x40\0\0\0\0\0\0\0", 8);
  expected += R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";  // exactly 64 bytes
  expected.append(reinterpret_cast<const char*>(values), sizeof values);
  EXPECT_EQ(read_bytes(path), expected);
}

TEST(SafetensorsWrite, HeaderIsSortedByNamePaddedWithSpacesAndDataKeepsTheGivenOrder) {
  test::TempDir dir;
  const fs::path path = dir.path() / "order.safetensors";
  const float a[3] = {1, 2, 3}, b[1] = {4};
  write_safetensors(path, {{"zeta", {3}, a}, {"alpha", {1}, b}}, {{"format", "pt"}, {"author", "lcmd"}});
  const std::string bytes = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  const std::string json_text =
      R"({"__metadata__":{"author":"lcmd","format":"pt"},)"
      R"("alpha":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},)"
      R"("zeta":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  EXPECT_EQ(header.substr(0, json_text.size()), json_text);
  EXPECT_EQ(header.find_first_not_of(' ', json_text.size()), std::string::npos) << "padding must be spaces";
  EXPECT_LT(header.size() - json_text.size(), 8u);
  EXPECT_EQ(bytes.size(), 8 + n + 16);
  float data[4];
  std::memcpy(data, bytes.data() + 8 + n, 16);
  EXPECT_EQ(data[0], 1.0f);  // "zeta" first, as given
  EXPECT_EQ(data[3], 4.0f);
}

TEST(SafetensorsWrite, RoundTripsF32F16Bf16AndMetadata) {
  test::TempDir dir;
  const fs::path path = dir.path() / "mixed.safetensors";
  const float inf = std::numeric_limits<float>::infinity();
  // Exact values, ties that must round to even, overflow, subnormals, signed zero, infinities.
  const std::vector<float> values = {0.0f, -0.0f, 1.0f, -2.5f, 1.0f / 3.0f, 65504.0f, 65520.0f, 1e-7f,
                                     6e-8f, inf, -inf, 3.0e38f, 1.00048828125f, 1.00146484375f, -7.0f, 0.1f};
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcode ✓"}};
  write_safetensors(path,
                    {{"w.f32", {4, 4}, values.data(), DType::F32},
                     {"w.f16", {2, 8}, values.data(), DType::F16},
                     {"w.bf16", {16}, values.data(), DType::BF16},
                     {"empty", {0, 3}, nullptr, DType::F16},
                     {"scalar", {}, values.data() + 2, DType::F32}},
                    metadata);
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), 5u);
  EXPECT_EQ(file.info("w.f16").dtype, DType::F16);
  EXPECT_EQ(file.info("w.bf16").dtype, DType::BF16);
  EXPECT_EQ(file.info("empty").nbytes, 0u);

  const Tensor f32 = file.load_f32("w.f32", {4, 4});
  const Tensor f16 = file.load_f32("w.f16", {2, 8});
  const Tensor bf16 = file.load_f32("w.bf16", {16});
  for (size_t i = 0; i < values.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(f32_bits(f32.data()[i]), f32_bits(values[i]));
    EXPECT_EQ(f32_bits(f16.data()[i]), f32_bits(f16_to_f32(f32_to_f16(values[i]))));
    EXPECT_EQ(f32_bits(bf16.data()[i]), f32_bits(bf16_to_f32(f32_to_bf16(values[i]))));
  }
  // A few roundings worked out by hand, so the test does not only trust the conversion functions.
  EXPECT_EQ(f16.data()[4], 0.333251953125f);          // 1/3 in f16
  EXPECT_EQ(bf16.data()[4], 0.333984375f);            // 1/3 in bf16
  EXPECT_EQ(f16.data()[6], inf);                      // 65520 rounds up to infinity in f16
  EXPECT_EQ(f16.data()[12], 1.0f);                    // 1 + 2^-11: tie, rounds to even (1.0)
  EXPECT_EQ(f16.data()[13], 1.001953125f);            // 1 + 3*2^-11: tie, rounds to even (1 + 2^-9)
  EXPECT_EQ(f16.data()[8], 5.9604644775390625e-08f);  // 6e-8 -> the smallest f16 subnormal
  EXPECT_TRUE(std::signbit(f16.data()[1]) && f16.data()[1] == 0.0f);

  EXPECT_EQ(file.load_f32("empty", {0, 3}).numel(), 0);
  EXPECT_EQ(file.load_f32("scalar", {}).data()[0], 1.0f);
}

TEST(SafetensorsWrite, F32TensorsListedFirstStayZeroCopyReadable) {
  test::TempDir dir;
  const fs::path path = dir.path() / "aligned.safetensors";
  const float v[3] = {1, 2, 3};
  write_safetensors(path, {{"b", {3}, v, DType::F32}, {"a", {3}, v, DType::F16}});
  const auto file = SafetensorsFile::open(path);
  ASSERT_NE(file.f32_data("b"), nullptr);
  EXPECT_EQ(file.f32_data("b")[2], 3.0f);
}

TEST(SafetensorsWrite, MisalignedF32DataHasNoZeroCopyViewButStillLoads) {
  test::TempDir dir;
  const fs::path path = dir.path() / "misaligned.safetensors";
  const float v[3] = {1, 2, 3};
  // A 3-element F16 tensor (6 bytes) first puts the F32 tensor at an offset that is not a multiple of 4.
  write_safetensors(path, {{"half", {3}, v, DType::F16}, {"full", {3}, v, DType::F32}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.f32_data("full"), nullptr);
  const Tensor t = file.load_f32("full", {3});
  EXPECT_EQ(t.data()[0], 1.0f);
  EXPECT_EQ(t.data()[2], 3.0f);
}

TEST(SafetensorsWrite, EmptyFileListIsAValidFile) {
  test::TempDir dir;
  const fs::path path = dir.path() / "none.safetensors";
  write_safetensors(path, {});
  const auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_TRUE(file.metadata().empty());
}

TEST(SafetensorsWrite, RejectsBadArgumentsNamingTheTensorAndLeavesNoFile) {
  test::TempDir dir;
  const fs::path path = dir.path() / "bad.safetensors";
  const float v[4] = {1, 2, 3, 4};
  const std::vector<std::pair<std::vector<TensorToWrite>, std::string>> cases = {
      {{{"dup", {2}, v}, {"dup", {2}, v}}, "'dup'"},
      {{{"__metadata__", {2}, v}}, "'__metadata__'"},
      {{{"ints", {2}, v, DType::I64}}, "'ints'"},
      {{{"neg", {-1, 2}, v}}, "'neg'"},
      {{{"null", {2}, nullptr}}, "'null'"},
      {{{std::string("bad\xff", 4), {2}, v}}, "UTF-8"},
  };
  for (const auto& [tensors, needle] : cases) {
    SCOPED_TRACE(needle);
    try {
      write_safetensors(path, tensors);
      ADD_FAILURE() << "no error";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_TRUE(fs::is_empty(dir.path()));
  }
}

TEST(SafetensorsWrite, ReplacesAnExistingFileWholesale) {
  test::TempDir dir;
  const fs::path path = dir.path() / "model.safetensors";
  const float big[8] = {1, 2, 3, 4, 5, 6, 7, 8}, small[1] = {9};
  write_safetensors(path, {{"big", {8}, big}});
  write_safetensors(path, {{"small", {1}, small}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_FALSE(file.contains("big"));
  EXPECT_EQ(file.load_f32("small", {1}).data()[0], 9.0f);
}

}  // namespace
}  // namespace lcmd
