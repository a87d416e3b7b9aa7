// `lcmd pull` as users run it: the real binary, configured only by HF_ENDPOINT and HF_TOKEN.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "hub/fake_hub.h"
#include "io/model_folder.h"

namespace lcmd::hub {
namespace {

namespace fs = std::filesystem;

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `env ... lcmd ARGS` under `timeout`, so a hung child ends by itself. Arguments are paths
// and plain words without quotes; they are single-quoted for the shell.
CommandResult run_lcmd(const std::vector<std::string>& env, const std::vector<std::string>& args, const fs::path& scratch) {
  std::string cmd = "timeout -s KILL 120 env -u HF_TOKEN -u HF_ENDPOINT";
  for (const std::string& e : env) cmd += " '" + e + "'";
  cmd += " '" + std::string(LCMD_BINARY) + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " > '" + (scratch / "stdout").string() + "' 2> '" + (scratch / "stderr").string() + "'";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(scratch / "stdout");
  r.err = read_text(scratch / "stderr");
  return r;
}

class PullCli : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fs::exists(LCMD_BINARY)) << "build lcmd_cli first: " << LCMD_BINARY; }
  test::FakeHub hub{test::golden_dir() / "tiny-lcm", "test-org/tiny-lcm"};
  test::TempDir tmp;
};

TEST_F(PullCli, PullsFromHfEndpointWithHfTokenAndTheModelTokenizes) {
  hub.require_token("hf_cli_token");
  const fs::path dir = tmp.path() / "pulled";
  const CommandResult pull = run_lcmd({"HF_ENDPOINT=" + hub.endpoint() + "/", "HF_TOKEN=hf_cli_token"},
                            {"pull", "test-org/tiny-lcm", "--dir", dir.string()}, tmp.path());
  ASSERT_EQ(pull.exit_code, 0) << pull.err;
  EXPECT_NE(pull.err.find("sha256 ok"), std::string::npos) << pull.err;
  EXPECT_EQ(pull.err.find('\r'), std::string::npos) << "no progress bar when stderr is not a terminal";
  for (const auto& r : hub.requests())
    EXPECT_EQ(r.authorization, r.server == "hub" ? "Bearer hf_cli_token" : "") << r.server << " " << r.path;
  EXPECT_NO_THROW(ModelFolder::locate(dir));

  const std::string prompt = "a photo of a cat";
  const CommandResult pulled = run_lcmd({}, {"tokenize", "--model", dir.string(), "--prompt", prompt}, tmp.path());
  const std::string golden_model = (test::golden_dir() / "tiny-lcm").string();
  const CommandResult golden = run_lcmd({}, {"tokenize", "--model", golden_model, "--prompt", prompt}, tmp.path());
  ASSERT_EQ(pulled.exit_code, 0) << pulled.err;
  ASSERT_EQ(golden.exit_code, 0) << golden.err;
  EXPECT_EQ(pulled.out, golden.out);
  EXPECT_EQ(pulled.out.rfind("[49406, ", 0), 0u) << pulled.out;  // starts with CLIP's <|startoftext|>
}

TEST_F(PullCli, A404IsOneLineNamingRepoAndFileWithExitCode2) {
  hub.remove("unet/config.json");
  const fs::path dir = tmp.path() / "pulled";
  const CommandResult r = run_lcmd({"HF_ENDPOINT=" + hub.endpoint()}, {"pull", "test-org/tiny-lcm", "--dir", dir.string()},
                         tmp.path());
  EXPECT_EQ(r.exit_code, 2);
  ASSERT_NE(r.err.find("lcmd: error:"), std::string::npos) << r.err;
  const std::string last_line = r.err.substr(r.err.rfind("lcmd: error:"));
  EXPECT_NE(last_line.find("test-org/tiny-lcm: unet/config.json: HTTP 404"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(last_line.begin(), last_line.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(dir / "unet" / "config.json"));
}

TEST_F(PullCli, BadFlagsAreRefusedBeforeAnyDownload) {
  const CommandResult variant = run_lcmd({"HF_ENDPOINT=" + hub.endpoint()}, {"pull", "--variant", "int4"}, tmp.path());
  EXPECT_EQ(variant.exit_code, 2);
  EXPECT_NE(variant.err.find("--variant"), std::string::npos) << variant.err;
  const CommandResult two = run_lcmd({"HF_ENDPOINT=" + hub.endpoint()}, {"pull", "a/b", "c/d"}, tmp.path());
  EXPECT_EQ(two.exit_code, 2);
  EXPECT_NE(two.err.find("'c/d'"), std::string::npos) << two.err;
  EXPECT_TRUE(hub.requests().empty());
}

}  // namespace
}  // namespace lcmd::hub
