// Each model against the tensors diffusers/transformers produced for the tiny golden model
// (../shared/golden/tiny-lcm-cases): rel L2 <= 1e-4 and max abs <= 1e-3 * max|ref|.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "models/clip_text.h"
#include "models/config.h"
#include "models/unet.h"
#include "models/vae.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using test::check_close;
using test::golden_dir;
using test::load_npy;
using test::load_npy_tensor;

fs::path model_dir() { return golden_dir() / "tiny-lcm"; }
fs::path cases_dir() { return golden_dir() / "tiny-lcm-cases"; }
nlohmann::json index() { return read_json_file(cases_dir() / "index.json"); }

// Compares an engine tensor with a reference .npy; 4-D references are NCHW, ours NHWC.
void expect_close(const Tensor& ours, const fs::path& ref_file, const std::string& what) {
  Tensor ref = load_npy_tensor(ref_file);
  const Tensor out = ours.rank() == 4 ? to_nchw(ours) : ours;
  ASSERT_EQ(shape_numel(out.shape()), ref.numel()) << what << ": ours " << shape_str(out.shape()) << " vs "
                                                   << shape_str(ref.shape());
  const std::string err = check_close(out.data(), ref.data(), static_cast<size_t>(ref.numel()));
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

// Compares the traced module outputs that have a reference (forward-hook outputs by module
// name); returns how many were compared.
int expect_trace_close(const std::vector<std::pair<std::string, Tensor>>& trace, const nlohmann::json& refs,
                       const std::string& case_name) {
  int checked = 0;
  for (const auto& [module, tensor] : trace) {
    if (!refs.contains(module)) continue;
    expect_close(tensor, cases_dir() / refs[module].get<std::string>(), case_name + " " + module);
    ++checked;
  }
  return checked;
}

TEST(ClipTextModel, MatchesTransformersOnEveryGoldenPrompt) {
  const auto cfg = ClipTextConfig::from_json(read_json_file(model_dir() / "text_encoder/config.json"), "text config");
  const SafetensorsSource weights(model_dir() / "text_encoder/model.safetensors");
  const ClipTextModel model(cfg, Weights(weights));
  const nlohmann::json cases = index();  // kept alive: the loop walks into it
  for (const auto& c : cases["text_encoder"]) {
    const test::Npy ids = load_npy(cases_dir() / c["input_ids"].get<std::string>());
    std::vector<int32_t> row(ids.i64.begin(), ids.i64.end());
    std::vector<Tensor> hidden;
    if (c.contains("hidden_states")) model.trace = &hidden;
    const Tensor out = model.forward({row});
    model.trace = nullptr;
    expect_close(out, cases_dir() / c["last_hidden_state"].get<std::string>(), c["prompt"].get<std::string>());
    if (c.contains("hidden_states")) {
      const Tensor ref = load_npy_tensor(cases_dir() / c["hidden_states"].get<std::string>());
      const int64_t per = ref.numel() / ref.dim(0);
      ASSERT_EQ(static_cast<int64_t>(hidden.size()), ref.dim(0));
      for (int64_t k = 0; k < ref.dim(0); ++k) {
        const std::string err = check_close(hidden[k].data(), ref.data() + k * per, static_cast<size_t>(per));
        EXPECT_TRUE(err.empty()) << "hidden_states[" << k << "]: " << err;
      }
    }
  }
}

class UNetGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config_ = new UNetConfig(UNetConfig::from_json(read_json_file(model_dir() / "unet/config.json"), "unet config"));
    const SafetensorsSource weights(model_dir() / "unet/diffusion_pytorch_model.safetensors");
    unet_ = new UNet2DConditionModel(*config_, Weights(weights));
  }
  static void TearDownTestSuite() {
    delete unet_;
    delete config_;
  }
  static UNetConfig* config_;
  static UNet2DConditionModel* unet_;
};
UNetConfig* UNetGolden::config_ = nullptr;
UNet2DConditionModel* UNetGolden::unet_ = nullptr;

TEST_F(UNetGolden, EveryCaseIncludingGuidanceEmbeddingAndIntermediates) {
  const auto cases = index()["unet"];
  ASSERT_EQ(cases.size(), 5u);
  for (const auto& c : cases) {
    const std::string name = c["name"];
    const Tensor sample = to_nhwc(load_npy_tensor(cases_dir() / c["sample"].get<std::string>()));
    const Tensor context = load_npy_tensor(cases_dir() / c["encoder_hidden_states"].get<std::string>());
    const Tensor cond = load_npy_tensor(cases_dir() / c["timestep_cond"].get<std::string>());
    const int timestep = static_cast<int>(load_npy(cases_dir() / c["timestep_npy"].get<std::string>()).i64.at(0));
    std::vector<std::pair<std::string, Tensor>> trace;
    unet_->trace = &trace;
    const Tensor out = unet_->forward(sample, timestep, context, &cond);
    unet_->trace = nullptr;
    expect_close(out, cases_dir() / c["noise_pred"].get<std::string>(), name + " noise_pred");
    if (c.contains("intermediates"))
      EXPECT_GE(expect_trace_close(trace, c["intermediates"], name), 14) << "intermediates compared for " << name;
  }
}

TEST(VaeDecoder, MatchesDiffusersOnEveryCaseAndIntermediate) {
  const auto cfg = VaeConfig::from_json(read_json_file(model_dir() / "vae/config.json"), "vae config");
  const SafetensorsSource weights(model_dir() / "vae/diffusion_pytorch_model.safetensors");
  const VaeDecoder vae(cfg, Weights(weights));
  const auto cases = index()["vae"];
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& c : cases) {
    const std::string name = c["name"];
    std::vector<std::pair<std::string, Tensor>> trace;
    vae.trace = &trace;
    const Tensor out = vae.forward(to_nhwc(load_npy_tensor(cases_dir() / c["vae_input"].get<std::string>())));
    vae.trace = nullptr;
    expect_close(out, cases_dir() / c["decoded"].get<std::string>(), name + " decoded");
    if (c.contains("intermediates"))
      EXPECT_EQ(expect_trace_close(trace, c["intermediates"], name), static_cast<int>(c["intermediates"].size())) << name;
  }
}

}  // namespace
}  // namespace lcmd
