// Issue 7 through the service front ends: `lcmd serve` and the Lambda bootstrap load every
// model `lcmd generate` loads (a diffusers folder, a single-file LDM checkpoint with
// --tokenizer/--config-dir, LoRAs merged at load, the TAESD decoder) and reproduce the golden
// images of diffusers for them; a LoRA that cannot be found stops the start with exit 2.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/flags.h"
#include "fake_runtime_api.h"
#include "image/base64.h"
#include "serve/deadline.h"
#include "serve/httplib_include.h"
#include "serve_test_util.h"
#include "support/test_support.h"

namespace lcmd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

fs::path tiny_sd() { return golden_dir() / "tiny-sd"; }
std::string lora_file(const char* name = "lora.safetensors") { return (golden_dir() / "tiny-sd-lora" / name).string(); }
fs::path sd_case(const char* run) { return golden_dir() / "tiny-sd-cases" / run / "image_uint8.npy"; }
fs::path ldm_file() { return golden_dir() / "tiny-lcm-ldm.safetensors"; }
fs::path lcm_run05() { return golden_dir() / "tiny-lcm-cases/pipeline/run05_256x256_s4_g8_seed0/image_uint8.npy"; }
fs::path taesd_run00() { return golden_dir() / "tiny-taesd-cases/pipeline/run00_256x256_s4_g8_seed0/image_uint8.npy"; }

// tiny-sd-cases (b) and (e): LoRA, guidance 2 with a negative prompt, seed 1, 4 steps, 256x256.
const json kCfgRequest = {{"prompt", "a photo of a cat"},
                          {"negative_prompt", "blurry, low quality"},
                          {"guidance_scale", 2.0},
                          {"seed", 1},
                          {"steps", 4}};
// tiny-lcm-cases run05 (and tiny-taesd-cases run00 with the tiny decoder): seed 0, 4 steps, guidance 8.
const json kLcmRequest = {{"prompt", "a photo of a cat"}, {"seed", 0}, {"steps", 4}, {"guidance_scale", 8.0}};

// The golden README's bound for final images (max abs diff 2, mean 0.01).
void expect_golden_image(const std::vector<uint8_t>& png, const fs::path& image_uint8) {
  const std::string error = check_image_close(png_rgb(png), image_uint8);
  EXPECT_TRUE(error.empty()) << image_uint8 << ": " << error;
}

std::vector<uint8_t> image_of_response(const std::string& response_json) {
  return base64_decode(json::parse(response_json).at("image_base64").get<std::string>());
}

std::vector<uint8_t> served_image(const ServeProcess& server, const json& request) {
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(120, 0);
  const auto res = client.Post("/v1/generate", request.dump(), "application/json");
  if (!res) throw std::runtime_error("no answer from lcmd serve");
  if (res->status != 200) throw std::runtime_error("lcmd serve answered " + std::to_string(res->status) + ": " + res->body);
  return image_of_response(res->body);
}

// ---- lcmd serve ----

TEST(ServeLoadPaths, FolderWithLoraReproducesStableDiffusionPipeline) {
  const ServeProcess server({"--precision", "fp32", "--lora", lora_file() + ":1.0"}, tiny_sd());
  expect_golden_image(served_image(server, kCfgRequest), sd_case("b_lora1_g2_neg_s4_256x256_seed1"));
}

TEST(ServeLoadPaths, RepeatedLoraFlagsAddUp) {
  // Two halves of the same LoRA (one fp32, one fp16 file, the --lora= form) merge like scale 0.5: case (e).
  const ServeProcess server({"--precision", "fp32", "--lora", lora_file() + ":0.25",
                             "--lora=" + lora_file("lora.fp16.safetensors") + ":0.25"},
                            tiny_sd());
  expect_golden_image(served_image(server, kCfgRequest), sd_case("e_lora0.5_g2_neg_s4_256x256_seed1"));
}

TEST(ServeLoadPaths, SingleFileCheckpointWithConfigDirReproducesTheGoldenImage) {
  const ServeProcess server({"--precision", "fp32", "--config-dir", tiny_model().string()}, ldm_file());
  expect_golden_image(served_image(server, kLcmRequest), lcm_run05());
}

TEST(ServeLoadPaths, SingleFileWithTokenizerAndTaesdAsTheDefaultDecoder) {
  // --tokenizer instead of the config folder's tokenizer; TAESD chosen by --decoder, and the
  // request's "decoder" still selects the VAE.
  const ServeProcess server({"--precision", "fp32", "--config-dir", tiny_model().string(), "--tokenizer",
                             (golden_dir() / "tokenizer").string(), "--taesd", (golden_dir() / "tiny-taesd").string(),
                             "--decoder", "taesd"},
                            ldm_file());
  expect_golden_image(served_image(server, kLcmRequest), taesd_run00());
  json vae = kLcmRequest;
  vae["decoder"] = "vae";
  expect_golden_image(served_image(server, vae), lcm_run05());
}

TEST(ServeLoadPaths, MissingOrBadLoraStopsTheStartWithExitTwo) {
  const TempDir dir;
  const CommandResult missing = run_command({LCMD_BINARY, "serve", "--model", tiny_sd().string(), "--port", "0",
                                             "--lora", "/nonexistent/lcm-lora.safetensors:0.8"},
                                            60s);
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.err.find("--lora /nonexistent/lcm-lora.safetensors: no such file"), std::string::npos)
      << missing.err;
  EXPECT_EQ(missing.out.find("listening"), std::string::npos);

  std::ofstream(dir.path() / "lora.ckpt") << "not a safetensors file";
  const CommandResult pickle = run_command(
      {LCMD_BINARY, "serve", "--model", tiny_sd().string(), "--port", "0", "--lora", (dir.path() / "lora.ckpt").string()},
      60s);
  EXPECT_EQ(pickle.status, 2);
  EXPECT_NE(pickle.err.find("lora.ckpt"), std::string::npos) << pickle.err;

  const CommandResult no_value =
      run_command({LCMD_BINARY, "serve", "--model", tiny_sd().string(), "--port", "0", "--lora"}, 60s);
  EXPECT_EQ(no_value.status, 2);
  EXPECT_NE(no_value.err.find("--lora needs a value"), std::string::npos) << no_value.err;
}

// ---- the Lambda bootstrap ----

std::vector<std::string> lambda_env(const FakeRuntimeApi& api, const fs::path& model,
                                    const std::vector<std::string>& more = {}) {
  std::vector<std::string> env = {"AWS_LAMBDA_RUNTIME_API=" + api.endpoint(), "LCMD_MODEL=" + model.string(),
                                   "LCMD_THREADS=2", "LCMD_PRECISION=fp32"};
  env.insert(env.end(), more.begin(), more.end());
  return env;
}

std::vector<uint8_t> lambda_image(FakeRuntimeApi& api, const ChildProcess& bootstrap, const json& request) {
  const std::string id = api.invoke(request.dump(), serve::unix_now_ms() + 120'000);
  const auto reply = api.wait_reply(id, 120s);
  if (!reply) throw std::runtime_error("no Lambda reply; stderr: " + bootstrap.stderr_text());
  if (reply->kind != "response") throw std::runtime_error("Lambda function error: " + reply->body);
  return image_of_response(reply->body);
}

TEST(LambdaLoadPaths, FolderWithLorasFromTheEnvironment) {
  // LCMD_LORA: a comma-separated list; two halves make case (e)'s scale 0.5.
  FakeRuntimeApi api;
  ChildProcess bootstrap({LCMD_BINARY},
                         lambda_env(api, tiny_sd(),
                                    {"LCMD_LORA=" + lora_file() + ":0.25," + lora_file("lora.fp16.safetensors") + ":0.25"}));
  ASSERT_TRUE(bootstrap.wait_for_line("\"init\"", 60s)) << bootstrap.stdout_text() << bootstrap.stderr_text();
  expect_golden_image(lambda_image(api, bootstrap, kCfgRequest), sd_case("e_lora0.5_g2_neg_s4_256x256_seed1"));
}

TEST(LambdaLoadPaths, LoraFlagWinsOverTheEnvironment) {
  FakeRuntimeApi api;
  ChildProcess bootstrap({LCMD_BINARY, "lambda", "--lora", lora_file()},
                         lambda_env(api, tiny_sd(), {"LCMD_LORA=/nonexistent/ignored.safetensors"}));
  ASSERT_TRUE(bootstrap.wait_for_line("\"init\"", 60s)) << bootstrap.stdout_text() << bootstrap.stderr_text();
  expect_golden_image(lambda_image(api, bootstrap, kCfgRequest), sd_case("b_lora1_g2_neg_s4_256x256_seed1"));
}

TEST(LambdaLoadPaths, SingleFileCheckpointWithTaesdFromTheEnvironment) {
  FakeRuntimeApi api;
  ChildProcess bootstrap({LCMD_BINARY},
                         lambda_env(api, ldm_file(),
                                    {"LCMD_CONFIG_DIR=" + tiny_model().string(),
                                     "LCMD_TOKENIZER=" + (golden_dir() / "tokenizer").string(),
                                     "LCMD_TAESD=" + (golden_dir() / "tiny-taesd").string(), "LCMD_DECODER=taesd"}));
  ASSERT_TRUE(bootstrap.wait_for_line("\"init\"", 60s)) << bootstrap.stdout_text() << bootstrap.stderr_text();
  expect_golden_image(lambda_image(api, bootstrap, kLcmRequest), taesd_run00());
  json vae = kLcmRequest;
  vae["decoder"] = "vae";
  expect_golden_image(lambda_image(api, bootstrap, vae), lcm_run05());
}

TEST(LambdaLoadPaths, MissingLoraIsAConfigInitErrorWithExitTwo) {
  for (const std::string& setting : {std::string("LCMD_LORA=/nonexistent/lcm-lora.safetensors"),
                                     "LCMD_LORA=" + lora_file() + ",,"}) {
    FakeRuntimeApi api;
    ChildProcess bootstrap({LCMD_BINARY}, lambda_env(api, tiny_sd(), {setting}));
    const auto error = api.wait_init_error(30s);
    ASSERT_TRUE(error) << setting << ": " << bootstrap.stderr_text();
    EXPECT_EQ(error->error_type, "config_error");
    const std::string expected = setting.find(",,") != std::string::npos ? "LCMD_LORA has an empty item"
                                                                          : "LCMD_LORA /nonexistent/lcm-lora.safetensors: no such file";
    EXPECT_NE(error->body.find(expected), std::string::npos) << error->body;
    EXPECT_EQ(bootstrap.wait(30s), 2);
  }
}

// ---- the shared FILE[:SCALE] parser (src/cli/flags.h) ----

TEST(LoraList, ParsesFilesScalesAndRefusesEmptyItems) {
  const std::vector<LoraSpec> loras = parse_lora_list("/m/a.safetensors:0.5,/m/b:c.safetensors,/m/d.safetensors:-1", "X");
  ASSERT_EQ(loras.size(), 3u);
  EXPECT_EQ(loras[0].path, "/m/a.safetensors");
  EXPECT_EQ(loras[0].scale, 0.5);
  EXPECT_EQ(loras[1].path, "/m/b:c.safetensors");  // a ':' not followed by a number belongs to the path
  EXPECT_EQ(loras[1].scale, 1.0);
  EXPECT_EQ(loras[2].scale, -1.0);
  for (const char* bad : {"", ",", "a.safetensors,", ":0.5", "a.safetensors:inf"})
    EXPECT_THROW(parse_lora_list(bad, "LCMD_LORA"), InputError) << bad;
  try {
    parse_lora_list("a,,b", "LCMD_LORA");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("LCMD_LORA has an empty item"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lcmd::test
