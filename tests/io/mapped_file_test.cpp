// MappedFile lives in core; it is tested here next to its main user (core's test folder belongs to
// the core types' owners).
#include "core/mapped_file.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <utility>

#include "core/error.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

fs::path write_text(const test::TempDir& dir, const std::string& name, const std::string& text) {
  const fs::path path = dir.path() / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string error_of(const fs::path& path) {
  try {
    MappedFile file(path);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

TEST(MappedFile, MapsTheWholeFile) {
  test::TempDir dir;
  const fs::path path = write_text(dir, "a.bin", "hello, mapping");
  const MappedFile file(path);
  ASSERT_EQ(file.size(), 14u);
  EXPECT_EQ(std::memcmp(file.data(), "hello, mapping", 14), 0);
  EXPECT_EQ(file.path(), path);
}

TEST(MappedFile, EmptyFileGivesAnEmptyMapping) {
  test::TempDir dir;
  const MappedFile file(write_text(dir, "empty.bin", ""));
  EXPECT_TRUE(file.empty());
  EXPECT_EQ(file.data(), nullptr);
}

TEST(MappedFile, MoveTransfersTheMappingAndEmptiesTheSource) {
  test::TempDir dir;
  MappedFile a(write_text(dir, "a.bin", "abc"));
  const uint8_t* p = a.data();
  MappedFile b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), 3u);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(a.size(), 0u);
  MappedFile c(write_text(dir, "c.bin", "xy"));
  c = std::move(b);  // unmaps c's old mapping, takes b's
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.data()[2], 'c');
}

TEST(MappedFile, ErrorsNameTheFileAndTheReason) {
  test::TempDir dir;
  const fs::path missing = dir.path() / "missing.bin";
  const std::string e1 = error_of(missing);
  EXPECT_NE(e1.find(missing.string()), std::string::npos) << e1;
  EXPECT_NE(e1.find("No such file or directory"), std::string::npos) << e1;
  const std::string e2 = error_of(dir.path());
  EXPECT_NE(e2.find(dir.path().string()), std::string::npos) << e2;
  EXPECT_NE(e2.find("not a regular file"), std::string::npos) << e2;
}

TEST(MappedFile, UnreadableFileReportsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can read any file";
  test::TempDir dir;
  const fs::path path = write_text(dir, "secret.bin", "x");
  fs::permissions(path, fs::perms::none);
  const std::string e = error_of(path);
  EXPECT_NE(e.find("Permission denied"), std::string::npos) << e;
}

}  // namespace
}  // namespace lcmd
