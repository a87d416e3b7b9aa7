#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "hub/fake_hub.h"
#include "hub/http_fetch.h"
#include "hub/hub_error.h"
#include "hub/pull.h"
#include "io/model_folder.h"

namespace lcmd::hub {
namespace {

namespace fs = std::filesystem;
using test::FakeHub;

constexpr const char* kRepo = "test-org/tiny-lcm";
constexpr const char* kUnet = "unet/diffusion_pytorch_model.safetensors";

fs::path tiny_model() { return test::golden_dir() / "tiny-lcm"; }

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

std::vector<std::string> leftover_partials(const fs::path& dir) {
  std::vector<std::string> found;
  if (!fs::exists(dir)) return found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().extension() == ".incomplete") found.push_back(e.path().string());
  return found;
}

// The error message of a pull expected to fail ("" if it did not throw PullError).
std::string pull_error(const PullOptions& options) {
  try {
    pull_model(options);
  } catch (const PullError& e) {
    return e.what();
  }
  return "";
}

class Pull : public ::testing::Test {
 protected:
  Pull() : hub(tiny_model(), kRepo) {
    options.repo = kRepo;
    options.endpoint = hub.endpoint();
    options.dir = out.path() / "model";
    options.stall_timeout_s = 20;
  }
  std::vector<test::LoggedRequest> requests_to(const std::string& server) const {
    std::vector<test::LoggedRequest> r;
    for (const auto& q : hub.requests())
      if (q.server == server) r.push_back(q);
    return r;
  }

  FakeHub hub;
  test::TempDir out;
  PullOptions options;
};

TEST_F(Pull, DownloadsEveryFileVerifiedAndTheFolderLoads) {
  const std::vector<PulledFile> files = pull_model(options);
  ASSERT_EQ(files.size(), 12u);
  for (const PulledFile& f : files) {
    SCOPED_TRACE(f.path);
    EXPECT_FALSE(f.already_present);
    EXPECT_EQ(read_bytes(options.dir / f.path), read_bytes(tiny_model() / f.path));
    // Weights are LFS files checked by sha256 (X-Linked-Etag), the rest by their git blob id.
    EXPECT_EQ(f.verified, f.path.ends_with(".safetensors") ? "sha256" : "git sha1");
  }
  EXPECT_NO_THROW(ModelFolder::locate(options.dir));
  EXPECT_TRUE(leftover_partials(options.dir).empty());
  EXPECT_EQ(requests_to("cdn").size(), 3u);  // the three weights followed the redirect
}

TEST_F(Pull, SendsTheTokenToTheHubButNeverToTheCdn) {
  hub.require_token("hf_secret");
  options.token = "hf_secret";
  pull_model(options);
  ASSERT_FALSE(requests_to("hub").empty());
  for (const auto& r : requests_to("hub")) EXPECT_EQ(r.authorization, "Bearer hf_secret") << r.path;
  ASSERT_EQ(requests_to("cdn").size(), 3u);
  for (const auto& r : requests_to("cdn")) EXPECT_EQ(r.authorization, "") << r.path;
}

TEST_F(Pull, WithoutTheTokenAPrivateRepoIsANamedError) {
  hub.require_token("hf_secret");
  const std::string error = pull_error(options);
  EXPECT_NE(error.find(kRepo), std::string::npos) << error;
  EXPECT_NE(error.find("model_index.json"), std::string::npos) << error;
  EXPECT_NE(error.find("HF_TOKEN"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(options.dir));
}

TEST_F(Pull, ResumesAPartialDownloadWithARangeRequest) {
  const std::string bytes = read_bytes(tiny_model() / kUnet);
  const size_t half = bytes.size() / 2;
  write_bytes(options.dir / (std::string(kUnet) + ".incomplete"), bytes.substr(0, half));
  uint64_t resumed_from = 0;
  pull_model(options, [&](const PulledFile& f) {
    if (f.path == kUnet) resumed_from = f.resumed_from;
  });
  EXPECT_EQ(resumed_from, half);
  EXPECT_EQ(read_bytes(options.dir / kUnet), bytes);
  bool ranged = false;
  for (const auto& r : requests_to("cdn"))
    if (r.path == "/cdn/" + hub.sha256_of(kUnet)) ranged = r.range == "bytes=" + std::to_string(half) + "-";
  EXPECT_TRUE(ranged);
  EXPECT_TRUE(leftover_partials(options.dir).empty());
}

TEST_F(Pull, APartialThatHoldsEveryByteIsFinishedWithoutDownloadingAgain) {
  // A run that died between the last byte and the rename: the server answers 416 to the Range.
  const std::string bytes = read_bytes(tiny_model() / kUnet);
  write_bytes(options.dir / (std::string(kUnet) + ".incomplete"), bytes);
  uint64_t resumed_from = 0;
  pull_model(options, [&](const PulledFile& f) {
    if (f.path == kUnet) resumed_from = f.resumed_from;
  });
  EXPECT_EQ(resumed_from, bytes.size()) << "every byte was kept, none downloaded again";
  EXPECT_EQ(read_bytes(options.dir / kUnet), bytes);
  EXPECT_TRUE(leftover_partials(options.dir).empty());
}

TEST_F(Pull, AChecksumMismatchIsANamedErrorAndLeavesNoFile) {
  const std::string vae = "vae/diffusion_pytorch_model.safetensors";
  hub.corrupt(vae);
  const std::string error = pull_error(options);
  EXPECT_NE(error.find(kRepo), std::string::npos) << error;
  EXPECT_NE(error.find(vae), std::string::npos) << error;
  EXPECT_NE(error.find("checksum mismatch"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(options.dir / vae));
  EXPECT_TRUE(leftover_partials(options.dir).empty());
}

TEST_F(Pull, AStalePartialFailsTheChecksumIsDeletedAndTheNextRunSucceeds) {
  const std::string bytes = read_bytes(tiny_model() / kUnet);
  write_bytes(options.dir / (std::string(kUnet) + ".incomplete"), std::string(bytes.size() / 2, '\x42'));
  EXPECT_NE(pull_error(options).find("checksum mismatch"), std::string::npos);
  EXPECT_TRUE(leftover_partials(options.dir).empty());
  pull_model(options);
  EXPECT_EQ(read_bytes(options.dir / kUnet), bytes);
}

TEST_F(Pull, AMissingFileIsA404NamingRepoAndFile) {
  hub.remove("vae/config.json");
  const std::string error = pull_error(options);
  EXPECT_NE(error.find(kRepo), std::string::npos) << error;
  EXPECT_NE(error.find("vae/config.json"), std::string::npos) << error;
  EXPECT_NE(error.find("404"), std::string::npos) << error;
  EXPECT_NE(error.find("not found"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(options.dir / "vae" / "config.json"));
  EXPECT_TRUE(leftover_partials(options.dir).empty());
}

TEST_F(Pull, AnUnknownRepositoryOrRevisionIsNamed) {
  options.repo = "test-org/nope";
  EXPECT_NE(pull_error(options).find("repository 'test-org/nope' not found"), std::string::npos);
  options.repo = kRepo;
  options.revision = "v9";
  EXPECT_NE(pull_error(options).find("revision 'v9' not found"), std::string::npos);
}

TEST_F(Pull, OfflineIsANamedErrorAndWritesNothing) {
  options.endpoint = "http://127.0.0.1:" + std::to_string(test::closed_port());
  options.connect_timeout_s = 5;
  const std::string error = pull_error(options);
  EXPECT_NE(error.find(kRepo), std::string::npos) << error;
  EXPECT_NE(error.find("model_index.json"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(options.dir));
}

TEST_F(Pull, TheFp16VariantFetchesTheFp16Weights) {
  for (const char* stem : {"text_encoder/model", "unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model"})
    hub.add_copy(std::string(stem) + ".fp16.safetensors", std::string(stem) + ".safetensors");
  options.variant = "fp16";
  pull_model(options);
  EXPECT_TRUE(fs::exists(options.dir / "unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_FALSE(fs::exists(options.dir / kUnet));
  for (const auto& r : requests_to("hub"))
    if (r.path.ends_with(".safetensors")) EXPECT_TRUE(r.path.ends_with(".fp16.safetensors")) << r.path;
  EXPECT_NO_THROW(ModelFolder::locate(options.dir));
}

TEST_F(Pull, FilesAlreadyPresentAreKept) {
  pull_model(options);
  const size_t before = hub.requests().size();
  for (const PulledFile& f : pull_model(options)) EXPECT_TRUE(f.already_present) << f.path;
  EXPECT_EQ(hub.requests().size(), before);
}

TEST(PullOptionsTest, UrlsAndValidation) {
  PullOptions o;
  EXPECT_EQ(resolve_url(o, "unet/config.json"),
            "https://huggingface.co/SimianLuo/LCM_Dreamshaper_v7/resolve/main/unet/config.json");
  o.revision = "refs/pr/1";
  EXPECT_EQ(resolve_url(o, "model_index.json"),
            "https://huggingface.co/SimianLuo/LCM_Dreamshaper_v7/resolve/refs%2Fpr%2F1/model_index.json");
  EXPECT_EQ(target_dir(o), fs::path("LCM_Dreamshaper_v7"));
  EXPECT_NO_THROW(validate(o));
  for (const char* bad : {"", "a/b/c", "../x", "a b/c", "owner/"}) {
    o.repo = bad;
    EXPECT_THROW(validate(o), InputError) << bad;
  }
  o.repo = "gpt2";
  EXPECT_NO_THROW(validate(o));
  o.variant = "bf16";
  EXPECT_THROW(validate(o), InputError);
  o.variant = "";
  o.endpoint = "ftp://example.com";
  EXPECT_THROW(validate(o), InputError);
}

TEST(PullOptionsTest, OriginsComparePortsAndHostsCaseInsensitively) {
  EXPECT_EQ(url_origin("https://HuggingFace.co/a/b"), "https://huggingface.co:443");
  EXPECT_EQ(url_origin("http://127.0.0.1:8080/x"), "http://127.0.0.1:8080");
  EXPECT_NE(url_origin("http://127.0.0.1:8080/x"), url_origin("http://127.0.0.1:8081/x"));
  EXPECT_EQ(url_origin("not a url"), "");
}

TEST(PullOptionsTest, ModelFilesCoverWhatTheEngineReads) {
  const std::vector<std::string> plain = model_files(""), fp16 = model_files("fp16");
  ASSERT_EQ(plain.size(), 12u);
  EXPECT_EQ(plain.back(), kUnet);
  EXPECT_EQ(fp16.back(), "unet/diffusion_pytorch_model.fp16.safetensors");
  for (const std::string& f : plain) EXPECT_TRUE(fs::exists(tiny_model() / f)) << f;
}

}  // namespace
}  // namespace lcmd::hub
