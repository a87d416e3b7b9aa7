// encode_png, checked by decoding with libpng; the test decoder is itself checked on the
// golden PNGs.
#include <gtest/gtest.h>
#include <png.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "image/png.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

struct Decoded {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// libpng's simplified reader, converting whatever is stored to 8-bit RGB.
Decoded decode_png(const std::vector<uint8_t>& file) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, file.data(), file.size()))
    throw std::runtime_error(std::string("png decode: ") + image.message);
  image.format = PNG_FORMAT_RGB;
  Decoded out;
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr))
    throw std::runtime_error(std::string("png decode: ") + image.message);
  return out;
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  return {std::istreambuf_iterator<char>(in), {}};
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

TEST(Png, TheTestDecoderReadsTheGoldenPngs) {
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(test::golden_dir() / "tiny-lcm-cases" / "pipeline")) {
    const test::Npy expected = test::load_npy(entry.path() / "image_uint8.npy");
    const Decoded d = decode_png(read_file(entry.path() / "image.png"));
    ASSERT_EQ(expected.shape.size(), 3u);
    EXPECT_EQ(d.height, expected.shape[0]) << entry.path();
    EXPECT_EQ(d.width, expected.shape[1]) << entry.path();
    EXPECT_EQ(d.rgb, expected.u8) << entry.path();
    ++checked;
  }
  EXPECT_EQ(checked, 16);
}

TEST(Png, EncodesEveryPixelLosslessly) {
  // Odd sizes, every byte value in every channel.
  const int width = 37, height = 23;
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>((i * 7 + i / 3) % 256);
  const std::vector<uint8_t> png = encode_png(rgb.data(), width, height);
  const Decoded d = decode_png(png);
  EXPECT_EQ(d.width, width);
  EXPECT_EQ(d.height, height);
  EXPECT_EQ(d.rgb, rgb);
}

TEST(Png, WritesAn8BitRgbFile) {
  const uint8_t pixel[3] = {255, 0, 128};
  const std::vector<uint8_t> png = encode_png(pixel, 1, 1);
  ASSERT_GT(png.size(), 33u);
  const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  EXPECT_EQ(std::memcmp(png.data(), signature, 8), 0);
  EXPECT_EQ(std::memcmp(png.data() + 12, "IHDR", 4), 0);
  EXPECT_EQ(read_be32(png.data() + 16), 1u);  // width
  EXPECT_EQ(read_be32(png.data() + 20), 1u);  // height
  EXPECT_EQ(png[24], 8);                      // bit depth
  EXPECT_EQ(png[25], 2);                      // colour type: truecolour (RGB, no alpha)
  EXPECT_EQ(std::memcmp(png.data() + png.size() - 8, "IEND", 4), 0);
}

TEST(Png, RoundTripsAGoldenImage) {
  const fs::path dir = test::golden_dir() / "tiny-lcm-cases" / "pipeline" / "run10_256x384_s1_g1_seed1234";
  const test::Npy image = test::load_npy(dir / "image_uint8.npy");
  const int height = static_cast<int>(image.shape[0]), width = static_cast<int>(image.shape[1]);
  const Decoded d = decode_png(encode_png(image.u8.data(), width, height));
  EXPECT_EQ(d.width, 384);
  EXPECT_EQ(d.height, 256);
  EXPECT_EQ(d.rgb, image.u8);
}

TEST(Png, RejectsBadArguments) {
  const uint8_t pixel[3] = {};
  EXPECT_THROW(encode_png(pixel, 0, 1), std::invalid_argument);
  EXPECT_THROW(encode_png(pixel, 1, -1), std::invalid_argument);
  EXPECT_THROW(encode_png(nullptr, 1, 1), std::invalid_argument);
}

}  // namespace
}  // namespace lcmd
