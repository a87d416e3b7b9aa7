// The corrupt-model matrix of issue 6 as a user meets it: `lcmd generate` on a damaged copy of the
// golden tiny model must exit with code 2, print one line naming the file (or, for NaN/Inf weights
// found while running, the component) and the problem, and write no PNG or temporary file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/corrupt_model.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using namespace test::corrupt;

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct CliRun {
  int exit_code;
  std::string err;
};

// `lcmd generate` on the model, writing out.png into `cwd`; bounded by `timeout` so a hang fails.
CliRun generate(const fs::path& model, const fs::path& cwd) {
  const fs::path err_file = cwd.parent_path() / "stderr.txt";
  const std::string cmd = "cd " + quote(cwd.string()) + " && timeout 300 " + quote(LCMD_BINARY) +
                          " generate --model " + quote(model.string()) +
                          " --prompt 'a photo of a cat' --width 64 --height 64 --steps 2 --seed 0 --output out.png" +
                          " > /dev/null 2> " + quote(err_file.string()) + " < /dev/null";
  const int status = std::system(cmd.c_str());
  std::ifstream in(err_file);
  std::stringstream err;
  err << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, err.str()};
}

class CorruptModelCli : public ::testing::Test {
 protected:
  fs::path file(const std::string& relative) const { return model_ / relative; }

  // Exit 2, one line on stderr holding every needle, and nothing written where out.png would go.
  void expect_refused(const std::vector<std::string>& needles) {
    const fs::path run_dir = dir_.path() / "run";
    fs::create_directory(run_dir);
    const CliRun r = generate(model_, run_dir);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    for (const std::string& needle : needles)
      EXPECT_NE(r.err.find(needle), std::string::npos) << "'" << needle << "' is not in: " << r.err;
    EXPECT_TRUE(fs::is_empty(run_dir)) << "a failed run left files behind";
  }

  test::TempDir dir_;
  fs::path model_ = copy_tiny_model(dir_.path());
};

TEST_F(CorruptModelCli, TheUndamagedCopyWritesItsImage) {  // the baseline every case departs from
  const fs::path run_dir = dir_.path() / "run";
  fs::create_directory(run_dir);
  const CliRun r = generate(model_, run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(fs::file_size(run_dir / "out.png"), 0u);
}

TEST_F(CorruptModelCli, TruncatedWeightFile) {
  fs::resize_file(file(kTextWeights), fs::file_size(file(kTextWeights)) - 1);
  expect_refused({file(kTextWeights).string(), "truncated"});
}

TEST_F(CorruptModelCli, HeaderLengthPastEndOfFile) {
  set_header_length(file(kVaeWeights), uint64_t(1) << 40);
  expect_refused({file(kVaeWeights).string(), "header size"});
}

TEST_F(CorruptModelCli, OverlappingOffsets) {
  edit_header(file(kUnetWeights), [](json& h) { h["conv_out.bias"]["data_offsets"] = {0, 16}; });
  expect_refused({file(kUnetWeights).string(), "conv_out.bias", "overlap"});
}

TEST_F(CorruptModelCli, OffsetsPastTheDataSection) {
  edit_header(file(kVaeWeights), [](json& h) {
    json& offsets = h["decoder.conv_in.bias"]["data_offsets"];
    const uint64_t far = uint64_t(1) << 30;  // the right length, a gigabyte past the end
    offsets = {offsets[0].get<uint64_t>() + far, offsets[1].get<uint64_t>() + far};
  });
  expect_refused({file(kVaeWeights).string(), "decoder.conv_in.bias", "past the end of the data section"});
}

TEST_F(CorruptModelCli, ByteSizeNotMatchingDtypeTimesShape) {
  edit_header(file(kUnetWeights), [](json& h) { h["conv_in.weight"]["dtype"] = "BF16"; });
  expect_refused({file(kUnetWeights).string(), "conv_in.weight", "byte size mismatch"});
}

TEST_F(CorruptModelCli, UnsupportedDtype) {
  edit_header(file(kTextWeights), [](json& h) { h["text_model.final_layer_norm.bias"]["dtype"] = "C64"; });
  expect_refused({file(kTextWeights).string(), "text_model.final_layer_norm.bias", "unknown dtype 'C64'"});
}

TEST_F(CorruptModelCli, NanWeightsFoundAtFirstUse) {
  set_first_value(file(kUnetWeights), "conv_out.bias", kNaN);
  expect_refused({"unet", "denoising step 1", "NaN/Inf"});
}

TEST_F(CorruptModelCli, InfWeightsFoundAtFirstUse) {
  fill_tensor(file(kVaeWeights), "decoder.conv_out.bias", kInf);
  expect_refused({"vae", "decoded image", "NaN/Inf"});
}

TEST_F(CorruptModelCli, NoVaeFolder) {
  fs::remove_all(file("vae"));
  expect_refused({file("vae").string()});
}

TEST_F(CorruptModelCli, NoUnetWeights) {
  fs::remove(file(kUnetWeights));
  expect_refused({file(kUnetWeights).string(), "missing"});
}

TEST_F(CorruptModelCli, StringWhereANumberIsExpected) {
  edit_json(file("vae/config.json"), [](json& j) { j["latent_channels"] = "4"; });
  expect_refused({file("vae/config.json").string(), "latent_channels", "must be an integer"});
}

TEST_F(CorruptModelCli, NegativeWidth) {
  edit_json(file("unet/config.json"), [](json& j) { j["block_out_channels"] = {32, -32, 32, 64}; });
  expect_refused({file("unet/config.json").string(), "block_out_channels"});
}

TEST_F(CorruptModelCli, MissingRequiredField) {
  edit_json(file("vae/config.json"), [](json& j) { j.erase("block_out_channels"); });
  expect_refused({file("vae/config.json").string(), "block_out_channels"});
}

}  // namespace
}  // namespace lcmd
