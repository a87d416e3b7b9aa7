// Issue 5 without Docker: deploy/lambda/assemble-rootfs.sh (which the Dockerfile runs) lays out the
// Lambda image's files (bootstrap, binary, its ldd closure, a packed model) in a temporary root;
// the bootstrap then runs from there with an empty environment except the Runtime API address and
// LCMD_MODEL inside the tree, so neither the build tree nor any system model path is reachable,
// and answers an invocation with the golden image. This proves the image's contents are complete.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "child_process.h"
#include "fake_runtime_api.h"
#include "image/base64.h"
#include "serve/deadline.h"
#include "serve_test_util.h"
#include "support/test_support.h"

namespace lcmd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

fs::path assemble_script() { return fs::path(LCMD_SOURCE_DIR) / "deploy/lambda/assemble-rootfs.sh"; }

TEST(LambdaImageTree, BootstrapServesFromTheAssembledFilesAlone) {
  TempDir dir;
  const fs::path packed = dir.path() / "tiny.lcmd", root = dir.path() / "rootfs";
  CommandResult r = run_command(
      {LCMD_BINARY, "pack", "--model", tiny_model().string(), "--out", packed.string(), "--dtype", "fp32"}, 120s);
  ASSERT_EQ(r.status, 0) << r.err;
  // The binary is copied out of the build tree first, so the tree holds no path back into it.
  const fs::path binary = dir.path() / "lcmd";
  fs::copy_file(LCMD_BINARY, binary);
  r = run_command({"/bin/sh", assemble_script().string(), binary.string(), packed.string(), root.string()}, 120s);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  fs::remove(binary);
  fs::remove(packed);
  for (const char* file : {"var/runtime/bootstrap", "opt/lcmd/bin/lcmd", "opt/lcmd/lib/libdnnl.so.2", "opt/sd_model"})
    EXPECT_TRUE(fs::exists(root / file)) << file;

  FakeRuntimeApi api;
  ChildProcess bootstrap({"/usr/bin/env", "-i", "AWS_LAMBDA_RUNTIME_API=" + api.endpoint(),
                          "LCMD_MODEL=" + (root / "opt/sd_model").string(), "LCMD_PRECISION=fp32",
                          (root / "var/runtime/bootstrap").string()});
  ASSERT_TRUE(bootstrap.wait_for_line("\"init\"", 60s)) << bootstrap.stdout_text() << bootstrap.stderr_text();
  const json request = {{"prompt", "a photo of a cat"}, {"seed", 0}, {"steps", 4}, {"guidance_scale", 8.0}};
  const std::string id = api.invoke(request.dump(), serve::unix_now_ms() + 60'000);
  const auto reply = api.wait_reply(id, 60s);
  ASSERT_TRUE(reply) << bootstrap.stderr_text();
  ASSERT_EQ(reply->kind, "response") << reply->body;
  const std::vector<uint8_t> png = base64_decode(json::parse(reply->body).at("image_base64").get<std::string>());
  const std::string error =
      check_image_close(png_rgb(png), golden_dir() / "tiny-lcm-cases/pipeline/run05_256x256_s4_g8_seed0/image_uint8.npy");
  EXPECT_TRUE(error.empty()) << error;
}

TEST(LambdaImageTree, AssembleScriptRefusesWhatIsNotABinaryAndAPackedModel) {
  TempDir dir;
  CommandResult r = run_command({"/bin/sh", assemble_script().string(), (dir.path() / "missing").string(),
                                 tiny_model().string(), (dir.path() / "root").string()},
                                30s);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("is not an executable"), std::string::npos) << r.err;
  r = run_command({"/bin/sh", assemble_script().string(), LCMD_BINARY, tiny_model().string(), (dir.path() / "root").string()},
                  30s);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("is not a packed model file"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.path() / "root"));
}

}  // namespace
}  // namespace lcmd::test
