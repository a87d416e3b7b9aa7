// The `lcmd` program as a user runs it: golden images from the tiny model, base64 output,
// tokenize/info, random model folders, and every bad input as a one-line error with exit 2
// and no output file.
#include <gtest/gtest.h>
#include <png.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "image/base64.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

struct CliRun {
  int exit_code;
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs lcmd with the arguments; bounded by `timeout` so a hang fails instead of blocking CI.
CliRun lcmd(const std::vector<std::string>& args, const fs::path& cwd) {
  std::string cmd = "cd " + quote(cwd.string()) + " && timeout 900 " + quote(LCMD_BINARY);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " > " + quote((cwd / "stdout.txt").string()) + " 2> " + quote((cwd / "stderr.txt").string()) + " < /dev/null";
  const int status = std::system(cmd.c_str());
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  CliRun r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(cwd / "stdout.txt"), slurp(cwd / "stderr.txt")};
  fs::remove(cwd / "stdout.txt");
  fs::remove(cwd / "stderr.txt");
  return r;
}

std::vector<uint8_t> decode_png_rgb(const std::vector<uint8_t>& bytes, int* w, int* h) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) return {};
  image.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> rgb(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, rgb.data(), 0, nullptr)) return {};
  *w = static_cast<int>(image.width);
  *h = static_cast<int>(image.height);
  return rgb;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::path tiny_model() { return test::golden_dir() / "tiny-lcm"; }
fs::path run_dir(const std::string& name) { return test::golden_dir() / "tiny-lcm-cases/pipeline" / name; }

// The golden README's bound for final images: max abs diff <= 2, mean abs diff <= 0.01.
void expect_matches_image_file(const std::vector<uint8_t>& png, const fs::path& image_uint8) {
  int w = 0, h = 0;
  const std::string err = test::check_image_close(decode_png_rgb(png, &w, &h), image_uint8);
  EXPECT_TRUE(err.empty()) << err;
}

void expect_matches_golden_image(const std::vector<uint8_t>& png, const std::string& run) {
  expect_matches_image_file(png, run_dir(run) / "image_uint8.npy");
}

TEST(Cli, GenerateReproducesTheGoldenImages) {
  test::TempDir dir;
  CliRun r = lcmd({"generate", "--model", tiny_model().string(), "--prompt", "a photo of a cat", "--seed", "0", "--steps",
                "4", "--guidance", "8", "--precision", "fp32", "--output", "cat.png", "--verbose"},
               dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("seed: 0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unet step 4"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("peak RSS"), std::string::npos) << r.err;
  expect_matches_golden_image(read_bytes(dir.path() / "cat.png"), "run05_256x256_s4_g8_seed0");

  const auto index = read_json_file(test::golden_dir() / "tiny-lcm-cases/index.json");
  const auto& run = index["pipeline"][13];  // H=256 x W=384, 2 steps, g8, seed 1234
  r = lcmd({"generate", "--model", tiny_model().string(), "--prompt", run["prompt"].get<std::string>(), "--seed",
            "1234", "--steps", "2", "--width", "384", "--height", "256", "--precision", "fp32", "--base64"},
           dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  while (!r.out.empty() && std::isspace(static_cast<unsigned char>(r.out.back()))) r.out.pop_back();
  expect_matches_golden_image(base64_decode(r.out), "run13_256x384_s2_g8_seed1234");
}

TEST(Cli, RandomSeedIsPrintedAndReproducible) {
  test::TempDir dir;
  CliRun a = lcmd({"generate", "--model", tiny_model().string(), "--prompt", "x", "--steps", "1", "--output", "a.png"},
               dir.path());
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const size_t p = a.err.find("seed: ");
  ASSERT_NE(p, std::string::npos);
  const std::string seed = a.err.substr(p + 6, a.err.find('\n', p) - p - 6);
  CliRun b = lcmd({"generate", "--model", tiny_model().string(), "--prompt", "x", "--steps", "1", "--seed", seed,
                "--output", "b.png"},
               dir.path());
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(read_bytes(dir.path() / "a.png"), read_bytes(dir.path() / "b.png"));
}

TEST(Cli, TokenizePrintsTheIds) {
  test::TempDir dir;
  const CliRun r = lcmd({"tokenize", "--model", tiny_model().string(), "--prompt", "a photo of a cat"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ids = nlohmann::json::parse(r.out).get<std::vector<int64_t>>();
  EXPECT_EQ(ids, test::load_npy(run_dir("run05_256x256_s4_g8_seed0") / "input_ids.npy").i64);
}

TEST(Cli, InfoShowsComponents) {
  test::TempDir dir;
  const CliRun r = lcmd({"info", "--model", tiny_model().string()}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"unet", "vae", "text_encoder", "parameters", "F32", "LCMScheduler", "block_out_channels"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
}

// One line on stderr, exit code 2, nothing written.
void expect_refused(const std::vector<std::string>& args, const std::string& must_mention) {
  test::TempDir dir;
  std::vector<std::string> full = args;
  full.insert(full.end(), {"--output", "out.png"});
  if (args[0] != "generate") full = args;
  const CliRun r = lcmd(full, dir.path());
  std::string joined;
  for (const auto& a : args) joined += a + " ";
  EXPECT_EQ(r.exit_code, 2) << joined << "\n" << r.err;
  EXPECT_NE(r.err.find(must_mention), std::string::npos) << joined << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(fs::is_empty(dir.path())) << joined << " left files behind";
}

TEST(Cli, BadFlagsAndValuesAreRefused) {
  const std::string m = tiny_model().string();
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--width", "100"}, "width");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--height", "0"}, "height");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--width", "4096"}, "2048");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--width", "abc"}, "--width");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--steps", "0"}, "steps");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--steps", "51"}, "1..50");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--guidance", "nan"}, "--guidance");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--guidance", "inf"}, "--guidance");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--seed", "-1"}, "--seed");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--precision", "fp8"}, "precision");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--colour", "red"}, "--colour");
  expect_refused({"generate", "--model", m}, "--prompt");
  expect_refused({"generate", "--model", m, "--prompt", "bad \xff\xfe utf-8"}, "UTF-8");
  expect_refused({"generate", "--model", "/nonexistent/model", "--prompt", "cat"}, "/nonexistent/model");
  expect_refused({"frobnicate"}, "frobnicate");
  expect_refused({"tokenize", "--model", m}, "--prompt");
  expect_refused({"make-random-model", "--like", m, "--out", "x", "--dtype", "int4"}, "--dtype");
}

TEST(Cli, CorruptOrIncompleteModelIsRefused) {
  test::TempDir model;
  fs::copy(tiny_model(), model.path() / "m", fs::copy_options::recursive);
  const fs::path unet = model.path() / "m/unet/diffusion_pytorch_model.safetensors";
  fs::resize_file(unet, fs::file_size(unet) / 2);
  expect_refused({"generate", "--model", (model.path() / "m").string(), "--prompt", "cat"},
                 "diffusion_pytorch_model.safetensors");
  fs::remove(unet);
  expect_refused({"generate", "--model", (model.path() / "m").string(), "--prompt", "cat"}, "unet");
  fs::copy(tiny_model(), model.path() / "m2", fs::copy_options::recursive);
  fs::remove(model.path() / "m2/vae/config.json");
  expect_refused({"info", "--model", (model.path() / "m2").string()}, "vae/config.json");
}

TEST(Cli, RandomModelFolderMatchesTheTinyLayoutAndRuns) {
  test::TempDir dir;
  for (const std::string dtype : {"fp32", "fp16"}) {
    const fs::path out = dir.path() / ("random-" + dtype);
    CliRun r = lcmd({"make-random-model", "--like", tiny_model().string(), "--out", out.string(), "--dtype", dtype},
                 dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string suffix = dtype == "fp16" ? ".fp16.safetensors" : ".safetensors";
    for (const std::string c : {"unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "text_encoder/model"}) {
      const SafetensorsFile ours = SafetensorsFile::open(out / (c + suffix));
      const SafetensorsFile ref = SafetensorsFile::open(tiny_model() / (c + ".safetensors"));
      ASSERT_EQ(ours.tensors().size(), ref.tensors().size()) << c;
      for (const TensorInfo& t : ref.tensors()) {
        ASSERT_TRUE(ours.contains(t.name)) << c << ": " << t.name;
        EXPECT_EQ(ours.info(t.name).shape, t.shape) << t.name;
        EXPECT_EQ(ours.info(t.name).dtype, dtype == "fp16" ? DType::F16 : DType::F32) << t.name;
      }
    }
    r = lcmd({"generate", "--model", out.string(), "--prompt", "a cat", "--steps", "2", "--seed", "7", "--output",
              "img.png"},
             dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    int w = 0, h = 0;
    EXPECT_EQ(decode_png_rgb(read_bytes(dir.path() / "img.png"), &w, &h).size(), 256u * 256 * 3);
  }
  // An existing non-empty output folder is never overwritten.
  const CliRun r = lcmd({"make-random-model", "--like", tiny_model().string(), "--out", (dir.path() / "random-fp32").string()},
                     dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lcmd

namespace lcmd {
namespace {

TEST(Cli, BenchPrintsTheJsonLaterChecksRead) {
  test::TempDir dir;
  const CliRun r = lcmd({"bench", "--model", tiny_model().string(), "--sizes", "256,128", "--steps", "2", "--repeat", "2",
                         "--warmup", "0", "--json"},
                        dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("machine"));
  ASSERT_EQ(j["runs"].size(), 2u);
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["width"], 256);
  EXPECT_EQ(run["height"], 256);
  EXPECT_EQ(run["steps"], 2);
  EXPECT_GT(run["total_ms"].get<double>(), 0);
  for (const char* stage : {"text_encoder", "unet_step", "vae_decode", "png"})
    EXPECT_GT(run["stages_ms"][stage].get<double>(), 0) << stage;
  EXPECT_GT(run["gmac"]["unet_step"].get<double>(), 0);
  EXPECT_GT(run["peak_rss_mb"].get<double>(), 0);
  EXPECT_GT(run["ready_ms"].get<double>(), 0);
  EXPECT_EQ(j["runs"][1]["width"], 128);
}

TEST(Cli, BenchRefusesBadFlags) {
  const std::string m = tiny_model().string();
  expect_refused({"bench", "--model", m, "--sizes", "256,100"}, "--sizes");
  expect_refused({"bench", "--model", m, "--random"}, "exactly one");
  expect_refused({"bench", "--model", m, "--repeat", "0"}, "--repeat");
  expect_refused({"bench", "--model", m, "--decoder", "taesd"}, "--taesd");
  expect_refused({"bench", "--model", m, "--decoder", "nearest"}, "--decoder");
}

// ---- Single-file checkpoints, LoRAs and classifier-free guidance ----

fs::path ldm_file() { return test::golden_dir() / "tiny-lcm-ldm.safetensors"; }

TEST(Cli, SingleFileCheckpointReproducesTheGoldenImage) {
  test::TempDir dir;
  // The tiny file needs the tiny head counts (--config-dir); its tokenizer comes from there too.
  const CliRun r = lcmd({"generate", "--model", ldm_file().string(), "--config-dir", tiny_model().string(), "--prompt",
                         "a photo of a cat", "--seed", "0", "--steps", "4", "--guidance", "8", "--precision", "fp32",
                         "--output", "cat.png"},
                        dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_matches_golden_image(read_bytes(dir.path() / "cat.png"), "run05_256x256_s4_g8_seed0");

  const CliRun info = lcmd({"info", "--model", ldm_file().string(), "--config-dir", tiny_model().string()}, dir.path());
  ASSERT_EQ(info.exit_code, 0) << info.err;
  for (const char* s : {"single-file LDM checkpoint", "LCM-distilled", "model.diffusion_model.", "\"time_cond_proj_dim\":32",
                        "I64", "tokenizer:"})
    EXPECT_NE(info.out.find(s), std::string::npos) << s << "\n" << info.out;

  const CliRun ids = lcmd({"tokenize", "--model", ldm_file().string(), "--tokenizer",
                           (test::golden_dir() / "tokenizer").string(), "--prompt", "a photo of a cat"},
                          dir.path());
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_EQ(nlohmann::json::parse(ids.out).get<std::vector<int64_t>>(),
            test::load_npy(run_dir("run05_256x256_s4_g8_seed0") / "input_ids.npy").i64);
}

TEST(Cli, LoraWithNegativePromptMatchesStableDiffusionPipeline) {
  test::TempDir dir;
  const fs::path cases = test::golden_dir() / "tiny-sd-cases";
  const std::string lora = (test::golden_dir() / "tiny-sd-lora/lora.safetensors").string();
  // (b): LoRA 1.0, guidance 2 with a negative prompt, seed 1.
  CliRun r = lcmd({"generate", "--model", (test::golden_dir() / "tiny-sd").string(), "--lora", lora + ":1.0", "--prompt",
                   "a photo of a cat", "--negative-prompt", "blurry, low quality", "--guidance", "2", "--seed", "1",
                   "--precision", "fp32", "--output", "b.png"},
                  dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_matches_image_file(read_bytes(dir.path() / "b.png"), cases / "b_lora1_g2_neg_s4_256x256_seed1/image_uint8.npy");
  // (e): the same at LoRA scale 0.5, the flag in its --lora= form.
  r = lcmd({"generate", "--model", (test::golden_dir() / "tiny-sd").string(), "--lora=" + lora + ":0.5", "--prompt",
            "a photo of a cat", "--negative-prompt", "blurry, low quality", "--guidance", "2", "--seed", "1",
            "--precision", "fp32", "--output", "e.png"},
           dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_matches_image_file(read_bytes(dir.path() / "e.png"), cases / "e_lora0.5_g2_neg_s4_256x256_seed1/image_uint8.npy");

  const CliRun info = lcmd({"info", "--model", (test::golden_dir() / "tiny-sd").string(), "--lora", lora}, dir.path());
  ASSERT_EQ(info.exit_code, 0) << info.err;
  for (const char* s : {"StableDiffusionPipeline", "modules: 277", "rank 4", "alpha 3"})
    EXPECT_NE(info.out.find(s), std::string::npos) << s << "\n" << info.out;
}

TEST(Cli, PicklesBadLorasAndMissingTokenizersAreRefused) {
  test::TempDir files;
  std::ofstream(files.path() / "model.ckpt") << "pickle";
  const std::string ckpt = (files.path() / "model.ckpt").string();
  expect_refused({"generate", "--model", ckpt, "--prompt", "cat"}, "weights_only=True");
  expect_refused({"info", "--model", ckpt}, "safetensors");
  const std::string m = (test::golden_dir() / "tiny-sd").string();
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--lora", ckpt}, "pickle");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--lora", "/nonexistent/lora.safetensors"},
                 "/nonexistent/lora.safetensors");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--lora"}, "--lora");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--tokenizer", "/nonexistent/tok"}, "--tokenizer");
  // A single file alone in its folder has no tokenizer to use.
  fs::copy_file(ldm_file(), files.path() / "alone.safetensors");
  expect_refused({"generate", "--model", (files.path() / "alone.safetensors").string(), "--prompt", "cat"}, "--tokenizer");
}

}  // namespace
}  // namespace lcmd

namespace lcmd {
namespace {

TEST(Cli, TaesdDecoderReproducesTheGoldenImage) {
  test::TempDir dir;
  const CliRun r = lcmd({"generate", "--model", tiny_model().string(), "--prompt", "a photo of a cat", "--seed", "0",
                         "--precision", "fp32", "--decoder", "taesd", "--taesd",
                         (test::golden_dir() / "tiny-taesd").string(), "--output", "t.png"},
                        dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_matches_image_file(read_bytes(dir.path() / "t.png"),
                            test::golden_dir() / "tiny-taesd-cases/pipeline/run00_256x256_s4_g8_seed0/image_uint8.npy");
}

TEST(Cli, TaesdFlagsAreChecked) {
  const std::string m = tiny_model().string();
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--decoder", "taesd"}, "--taesd");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--decoder", "bicubic"}, "--decoder");
  expect_refused({"generate", "--model", m, "--prompt", "cat", "--decoder", "taesd", "--taesd", "/nonexistent"},
                 "/nonexistent");
}


TEST(Cli, PackedModelRunsEveryCommandAndMatchesTheFolder) {
  test::TempDir dir;
  CliRun r = lcmd({"pack", "--model", tiny_model().string(), "--out", "tiny.lcmd", "--dtype", "fp32"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("wrote tiny.lcmd"), std::string::npos) << r.err;

  r = lcmd({"info", "--model", "tiny.lcmd", "--verify"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* needle : {"lcmd packed model", "dtype fp32", "unet: 685 tensors", "tokenizer: embedded", "verified"})
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << " is not in: " << r.out;

  r = lcmd({"tokenize", "--model", "tiny.lcmd", "--prompt", "a photo of a cat"}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("[49406, 320, 1125, 539, 320, 2368, 49407", 0), 0u) << r.out;

  r = lcmd({"generate", "--model", "tiny.lcmd", "--prompt", "a photo of a cat", "--seed", "0", "--precision", "fp32",
            "--output", "cat.png"},
           dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_matches_golden_image(read_bytes(dir.path() / "cat.png"), "run05_256x256_s4_g8_seed0");
}

TEST(Cli, DamagedPackedModelsAndBadPackFlagsAreRefused) {
  test::TempDir dir;
  ASSERT_EQ(lcmd({"pack", "--model", tiny_model().string(), "--out", "good.lcmd"}, dir.path()).exit_code, 0);
  std::vector<uint8_t> bytes = read_bytes(dir.path() / "good.lcmd");
  bytes.resize(bytes.size() / 2);
  std::ofstream(dir.path() / "half.lcmd", std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  CliRun r = lcmd({"generate", "--model", "half.lcmd", "--prompt", "x", "--output", "x.png"}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("half.lcmd: truncated packed model"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.path() / "x.png"));

  r = lcmd({"pack", "--model", tiny_model().string(), "--out", "y.lcmd", "--dtype", "int3"}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--dtype must be auto, fp32, fp16 or bf16, got 'int3'"), std::string::npos) << r.err;
  r = lcmd({"pack", "--model", tiny_model().string()}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
  r = lcmd({"pack", "--model", "good.lcmd", "--out", "good.lcmd"}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("is the model being packed"), std::string::npos) << r.err;
  r = lcmd({"info", "--model", tiny_model().string(), "--verify"}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--verify checks packed models"), std::string::npos) << r.err;

  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.path())) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"good.lcmd", "half.lcmd"}));
}

// A full disk, simulated with a file size limit (writes fail with EFBIG as on ENOSPC): a clean
// one-line error and no partial or temporary file.
TEST(Cli, PackOnAFullDiskLeavesNothingBehind) {
  test::TempDir dir;
  const std::string cmd = "cd " + quote(dir.path().string()) + " && ulimit -f 1024 && timeout 300 " + quote(LCMD_BINARY) +
                          " pack --model " + quote(tiny_model().string()) + " --out big.lcmd --dtype fp32 2> err.txt";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "lcmd was killed (SIGXFSZ?)";
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::ifstream in(dir.path() / "err.txt");
  const std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find("lcmd: error:"), std::string::npos) << err;
  EXPECT_NE(err.find("big.lcmd"), std::string::npos) << err;
  fs::remove(dir.path() / "err.txt");
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a partial file was left behind";
}

}  // namespace
}  // namespace lcmd
