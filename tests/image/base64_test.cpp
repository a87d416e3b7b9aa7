#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "image/base64.h"

namespace lcmd {
namespace {

std::vector<uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

TEST(Base64, Rfc4648TestVectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},        {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(bytes_of(plain)), encoded) << plain;
    EXPECT_EQ(base64_decode(encoded), bytes_of(plain)) << encoded;
  }
}

TEST(Base64, UsesTheStandardAlphabetForHighValues) {
  EXPECT_EQ(base64_encode({0xfb, 0xff, 0xbf}), "+/+/");
  EXPECT_EQ(base64_decode("+/+/"), (std::vector<uint8_t>{0xfb, 0xff, 0xbf}));
  EXPECT_EQ(base64_encode({0x00}), "AA==");
}

TEST(Base64, RoundTripsEveryByteAndLength) {
  std::mt19937 rng(3);
  for (size_t length = 0; length < 70; ++length) {
    std::vector<uint8_t> data(length);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    const std::string text = base64_encode(data);
    EXPECT_EQ(text.size(), (length + 2) / 3 * 4);
    EXPECT_EQ(base64_decode(text), data) << length;
  }
  std::vector<uint8_t> all(256);
  for (int i = 0; i < 256; ++i) all[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
  EXPECT_EQ(base64_decode(base64_encode(all)), all);
}

// Expects InputError whose message contains `fragment`.
void expect_rejected(std::string_view text, const std::string& fragment) {
  try {
    base64_decode(text);
    ADD_FAILURE() << "accepted \"" << text << "\"";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "'" << fragment << "' not in: " << e.what();
  }
}

TEST(Base64, RejectsMalformedInput) {
  expect_rejected("Zg=", "multiple of 4");
  expect_rejected("Zg", "multiple of 4");
  expect_rejected("Zm9-", "'-' is not in the alphabet at position 3");
  expect_rejected("Zm9v\nZm9v", "multiple of 4");
  expect_rejected("Zm9vZm9\n", "byte 0x0a is not in the alphabet at position 7");
  expect_rejected(std::string_view("Zm\0v", 4), "byte 0x00");
  expect_rejected("Zg==Zg==", "padding before the end at position 2");
  expect_rejected("Z===", "padding before the end at position 1");
  expect_rejected("====", "padding before the end at position 0");
  expect_rejected("Zh==", "non-zero bits");  // "Zg==" is the canonical form of "f"
  expect_rejected("Zm9=", "non-zero bits");
}

}  // namespace
}  // namespace lcmd
