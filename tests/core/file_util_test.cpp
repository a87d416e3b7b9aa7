#include "core/file_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(WriteFileAtomic, WritesBytesAndReplacesAnExistingFile) {
  test::TempDir dir;
  const fs::path path = dir.path() / "out.bin";
  write_file_atomic(path, "first version, longer", 21);
  EXPECT_EQ(read_text_file(path), "first version, longer");
  write_file_atomic(path, "second", 6);
  EXPECT_EQ(read_text_file(path), "second");
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"out.bin"});
}

TEST(WriteFileAtomic, WriterCallbackStreamsLargeAndSmallWrites) {
  test::TempDir dir;
  const fs::path path = dir.path() / "stream.txt";
  const std::string big(200000, 'z');  // larger than the stream buffer: written around it
  write_file_atomic(path, [&](std::ostream& out) { out << "head:" << 42 << '\n' << big << "tail"; });
  EXPECT_EQ(read_text_file(path), "head:42\n" + big + "tail");
}

TEST(WriteFileAtomic, EmptyContentGivesAnEmptyFile) {
  test::TempDir dir;
  const fs::path path = dir.path() / "empty";
  write_file_atomic(path, "", 0);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(fs::file_size(path), 0u);
}

TEST(WriteFileAtomic, ThrowingWriterLeavesTheTargetUntouchedAndNoTempFile) {
  test::TempDir dir;
  const fs::path path = dir.path() / "model.safetensors";
  write_file_atomic(path, "original", 8);
  EXPECT_THROW(write_file_atomic(path,
                                 [](std::ostream& out) {
                                   out << std::string(100000, 'x');  // some data already written
                                   throw std::runtime_error("converter failed");
                                 }),
               std::runtime_error);
  EXPECT_EQ(read_text_file(path), "original");
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"model.safetensors"});
}

TEST(WriteFileAtomic, ThrowingWriterCreatesNothingWhenThereWasNoTarget) {
  test::TempDir dir;
  EXPECT_THROW(write_file_atomic(dir.path() / "new.bin", [](std::ostream&) { throw std::logic_error("no"); }),
               std::logic_error);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(WriteFileAtomic, StreamThatWentBadIsAnErrorAndCleansUp) {
  test::TempDir dir;
  const fs::path path = dir.path() / "out.bin";
  write_file_atomic(path, "original", 8);
  EXPECT_THROW(write_file_atomic(path, [](std::ostream& out) { out.setstate(std::ios::badbit); }), std::system_error);
  EXPECT_EQ(read_text_file(path), "original");
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"out.bin"});
}

TEST(WriteFileAtomic, MissingDirectoryIsASystemErrorNamingTheFile) {
  test::TempDir dir;
  const fs::path path = dir.path() / "no/such/dir/out.bin";
  try {
    write_file_atomic(path, "x", 1);
    FAIL() << "no error";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(WriteFileAtomic, RenameOntoADirectoryFailsAndCleansUp) {
  test::TempDir dir;
  const fs::path target = dir.path() / "taken";
  fs::create_directories(target / "child");  // rename(2) never replaces a directory with a file
  EXPECT_THROW(write_file_atomic(target, "x", 1), std::system_error);
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"taken"});
  EXPECT_TRUE(fs::is_directory(target));
}

TEST(ReadTextFile, ReadsTheWholeFile) {
  test::TempDir dir;
  const fs::path path = dir.path() / "t.json";
  std::ofstream(path) << "{\"a\": 1}\nsecond line\n";
  EXPECT_EQ(read_text_file(path), "{\"a\": 1}\nsecond line\n");
}

TEST(ReadTextFile, MissingFileIsAModelErrorNamingIt) {
  test::TempDir dir;
  const fs::path path = dir.path() / "config.json";
  try {
    read_text_file(path);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

TEST(ReadTextFile, DirectoryIsAModelError) {
  test::TempDir dir;
  EXPECT_THROW(read_text_file(dir.path()), ModelError);
}

}  // namespace
}  // namespace lcmd
