// The corrupt-model matrix of issue 6 at the loader: a copy of the golden tiny model, damaged one
// way per test, given to Engine::load (and for NaN/Inf weights, to generate). Each must end in a
// ModelError that names the file (or the component) and the problem, never a crash or an image.
// Header-level parsing of the same damage on hand-made files is in safetensors_corruption_test.cpp
// and config field checks in tests/models/model_errors_test.cpp; this file checks that the damage
// inside a real model folder is reported through the whole loader.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "lcmd/engine.h"
#include "support/corrupt_model.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using test::expect_model_error;
using namespace test::corrupt;

EngineOptions fp32_options() {
  EngineOptions options;
  options.precision = "fp32";
  options.text_cache_entries = 0;
  return options;
}

void expect_load_fails(const fs::path& model, const std::vector<std::string>& needles) {
  expect_model_error([&] { Engine::load(model, fp32_options()); }, needles);
}

// Loads (which must work: the damage is in the values) and generates; the run must fail.
void expect_generate_fails(const fs::path& model, const std::vector<std::string>& needles) {
  const std::unique_ptr<Engine> engine = Engine::load(model, fp32_options());
  GenerateRequest request;
  request.prompt = "a photo of a cat";
  request.width = request.height = 64;
  request.steps = 2;
  request.seed = 0;
  expect_model_error([&] { engine->generate(request); }, needles);
}

class CorruptModel : public ::testing::Test {
 protected:
  fs::path file(const std::string& relative) const { return model_ / relative; }
  test::TempDir dir_;
  fs::path model_ = copy_tiny_model(dir_.path());
};

TEST_F(CorruptModel, TheUndamagedCopyLoadsAndGenerates) {  // the baseline every case departs from
  const std::unique_ptr<Engine> engine = Engine::load(model_, fp32_options());
  GenerateRequest request;
  request.prompt = "a photo of a cat";
  request.width = request.height = 64;
  request.steps = 2;
  request.seed = 0;
  EXPECT_FALSE(engine->generate(request).png.empty());
}

// --- the weight files' structure

TEST_F(CorruptModel, TruncatedWeightFile) {
  const fs::path vae = file(kVaeWeights);
  fs::resize_file(vae, fs::file_size(vae) / 2);
  expect_load_fails(model_, {vae.string(), "truncated"});
}

TEST_F(CorruptModel, HeaderLengthPastEndOfFile) {
  const fs::path unet = file(kUnetWeights);
  set_header_length(unet, fs::file_size(unet));
  expect_load_fails(model_, {unet.string(), "past the end"});
}

TEST_F(CorruptModel, OverlappingOffsetsNameBothTensors) {
  const fs::path vae = file(kVaeWeights);
  const std::string moved = "decoder.conv_out.bias";
  std::string first;  // the tensor at the start of the data section, which the moved one will overlap
  edit_header(vae, [&](json& h) {
    for (const auto& [name, entry] : h.items())
      if (name != "__metadata__" && entry["data_offsets"][0] == 0) first = name;
    const uint64_t length = h[moved]["data_offsets"][1].get<uint64_t>() - h[moved]["data_offsets"][0].get<uint64_t>();
    h[moved]["data_offsets"] = {0, length};
  });
  ASSERT_FALSE(first.empty());
  expect_load_fails(model_, {vae.string(), "overlap", moved, first});
}

TEST_F(CorruptModel, OffsetsPastTheDataSection) {
  const fs::path unet = file(kUnetWeights);
  const std::string victim = "conv_in.weight";
  const uint64_t data_size = SafetensorsParts::read(unet).data.size();
  edit_header(unet, [&](json& h) {
    const uint64_t length = h[victim]["data_offsets"][1].get<uint64_t>() - h[victim]["data_offsets"][0].get<uint64_t>();
    h[victim]["data_offsets"] = {data_size, data_size + length};
  });
  expect_load_fails(model_, {unet.string(), victim, "past the end of the data section"});
}

// --- dtypes

TEST_F(CorruptModel, ByteSizeNotMatchingDtypeTimesShape) {
  const fs::path text = file(kTextWeights);
  const std::string victim = "text_model.final_layer_norm.weight";
  edit_header(text, [&](json& h) { h[victim]["dtype"] = "F16"; });  // half the bytes the offsets hold
  expect_load_fails(model_, {text.string(), victim, "byte size mismatch"});
}

TEST_F(CorruptModel, UnsupportedDtype) {
  const fs::path unet = file(kUnetWeights);
  const std::string victim = "conv_out.bias";
  edit_header(unet, [&](json& h) { h[victim]["dtype"] = "F8_E4M3"; });
  expect_load_fails(model_, {unet.string(), victim, "unknown dtype 'F8_E4M3'"});
}

TEST_F(CorruptModel, IntegerTensorWhereWeightsAreExpected) {
  const fs::path vae = file(kVaeWeights);
  const std::string victim = "decoder.conv_in.bias";
  edit_header(vae, [&](json& h) { h[victim]["dtype"] = "I32"; });  // same size: the header is valid
  expect_load_fails(model_, {vae.string(), victim, "I32", "expected a float dtype"});
}

// --- NaN / Inf values: reported at first use, naming the component

TEST_F(CorruptModel, NanInUnetWeightsStopsTheFirstStep) {
  set_first_value(file(kUnetWeights), "conv_out.bias", kNaN);
  expect_generate_fails(model_, {"unet", "denoising step 1 of 2", "NaN/Inf"});
}

TEST_F(CorruptModel, InfInTextEncoderWeightsStopsAtTheEmbedding) {
  set_first_value(file(kTextWeights), "text_model.final_layer_norm.bias", kInf);
  expect_generate_fails(model_, {"text_encoder", "prompt embedding", "NaN/Inf"});
}

TEST_F(CorruptModel, NanInVaeWeightsStopsAtTheDecodedImage) {
  fill_tensor(file(kVaeWeights), "decoder.conv_out.bias", kNaN);
  expect_generate_fails(model_, {"vae", "decoded image", "NaN/Inf"});
}

// --- missing components

TEST_F(CorruptModel, NoVaeFolder) {
  fs::remove_all(file("vae"));
  expect_load_fails(model_, {file("vae").string()});
}

TEST_F(CorruptModel, NoUnetWeights) {
  fs::remove(file(kUnetWeights));
  expect_load_fails(model_, {file(kUnetWeights).string(), "missing"});
}

TEST_F(CorruptModel, NoTokenizerFolder) {
  fs::remove_all(file("tokenizer"));
  expect_load_fails(model_, {file("tokenizer").string()});
}

TEST_F(CorruptModel, NoSchedulerConfig) {
  fs::remove(file("scheduler/scheduler_config.json"));
  expect_load_fails(model_, {file("scheduler/scheduler_config.json").string()});
}

// --- config types

TEST_F(CorruptModel, StringWhereTheUnetConfigWantsANumber) {
  edit_json(file("unet/config.json"), [](json& j) { j["cross_attention_dim"] = "16"; });
  expect_load_fails(model_, {file("unet/config.json").string(), "cross_attention_dim", "must be an integer"});
}

TEST_F(CorruptModel, NegativeVaeWidth) {
  edit_json(file("vae/config.json"), [](json& j) { j["block_out_channels"][1] = -32; });
  expect_load_fails(model_, {file("vae/config.json").string(), "block_out_channels", "-32"});
}

TEST_F(CorruptModel, NegativeTextEncoderWidth) {
  edit_json(file("text_encoder/config.json"), [](json& j) { j["hidden_size"] = -16; });
  expect_load_fails(model_, {file("text_encoder/config.json").string(), "hidden_size", "-16"});
}

TEST_F(CorruptModel, MissingRequiredUnetField) {
  edit_json(file("unet/config.json"), [](json& j) { j.erase("down_block_types"); });
  expect_load_fails(model_, {file("unet/config.json").string(), "down_block_types"});
}

TEST_F(CorruptModel, StringWhereTheSchedulerConfigWantsANumber) {
  edit_json(file("scheduler/scheduler_config.json"), [](json& j) { j["num_train_timesteps"] = "1000"; });
  expect_load_fails(model_, {file("scheduler/scheduler_config.json").string(), "num_train_timesteps"});
}

TEST_F(CorruptModel, ConfigThatIsNotJson) {
  write_bytes(file("vae/config.json"), "{\"block_out_channels\": [32, 32,");
  expect_load_fails(model_, {file("vae/config.json").string(), "JSON"});
}

}  // namespace
}  // namespace lcmd
