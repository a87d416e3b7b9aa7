// LcmScheduler against diffusers 0.24 (golden/tiny-lcm-cases/scheduler and the pipeline runs).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "sched/lcm_scheduler.h"
#include "support/test_support.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kStepBound = 1e-6;  // golden README: every scheduler output, relative

fs::path cases_dir() { return test::golden_dir() / "tiny-lcm-cases"; }
fs::path scheduler_config_path() { return test::golden_dir() / "tiny-lcm" / "scheduler" / "scheduler_config.json"; }

json load_index() {
  std::ifstream in(cases_dir() / "index.json");
  if (!in) throw std::runtime_error("cannot open " + (cases_dir() / "index.json").string());
  return json::parse(in);
}

std::vector<float> load_f32(const std::string& rel) { return test::load_npy(cases_dir() / rel).f32; }

LcmScheduler tiny_lcm_scheduler() { return LcmScheduler(LcmSchedulerConfig::from_file(scheduler_config_path())); }

double rel_diff(double got, double ref) { return std::fabs(got - ref) / std::fabs(ref); }

// rel L2 <= bound, and max abs <= bound * max|ref| (the README's "relative", made strict).
void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double bound, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  EXPECT_EQ(test::check_close(got.data(), ref.data(), ref.size(), bound, bound), "") << what;
}

// ---------------------------------------------------------------- config

TEST(LcmSchedulerConfig, ReadsTheTinyLcmConfig) {
  const auto c = LcmSchedulerConfig::from_file(scheduler_config_path());
  EXPECT_EQ(c.num_train_timesteps, 1000);
  EXPECT_DOUBLE_EQ(c.beta_start, 0.00085);
  EXPECT_DOUBLE_EQ(c.beta_end, 0.012);
  EXPECT_EQ(c.beta_schedule, "scaled_linear");
  EXPECT_TRUE(c.trained_betas.empty());
  EXPECT_EQ(c.original_inference_steps, 50);
  EXPECT_DOUBLE_EQ(c.timestep_scaling, 10.0);
  EXPECT_EQ(c.prediction_type, "epsilon");
  EXPECT_FALSE(c.clip_sample);
  EXPECT_TRUE(c.set_alpha_to_one);
}

// Expects ModelError whose message names the source and contains every fragment.
void expect_config_error(const json& j, const std::vector<std::string>& fragments) {
  try {
    LcmSchedulerConfig::from_json(j, "my/scheduler_config.json");
    ADD_FAILURE() << "accepted " << j.dump();
  } catch (const ModelError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("my/scheduler_config.json"), std::string::npos) << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

TEST(LcmSchedulerConfig, RefusesWhatItCannotRunNamingTheField) {
  expect_config_error({{"thresholding", true}}, {"thresholding", "only false"});
  expect_config_error({{"rescale_betas_zero_snr", true}}, {"rescale_betas_zero_snr", "only false"});
  expect_config_error({{"beta_schedule", "sigmoid"}}, {"beta_schedule", "sigmoid", "scaled_linear", "linear"});
  expect_config_error({{"prediction_type", "flow"}}, {"prediction_type", "epsilon", "v_prediction", "sample"});
  expect_config_error({{"num_train_timesteps", "1000"}}, {"num_train_timesteps", "integer"});
  expect_config_error({{"num_train_timesteps", 0}}, {"num_train_timesteps", "between 1 and 100000"});
  // Found by fuzz_config: a huge count made the schedule allocate GBs.
  expect_config_error({{"num_train_timesteps", 2000000000}, {"original_inference_steps", 1}, {"beta_schedule", "linear"}},
                      {"num_train_timesteps", "between 1 and 100000", "2000000000"});
  expect_config_error({{"original_inference_steps", 2000}}, {"original_inference_steps", "between 1 and"});
  expect_config_error({{"beta_start", nullptr}}, {"beta_start", "number"});
  expect_config_error({{"clip_sample", 1}}, {"clip_sample", "true or false"});
  expect_config_error({{"trained_betas", {0.1, 0.2}}}, {"trained_betas", "2 values"});
  expect_config_error({{"num_train_timesteps", 2}, {"original_inference_steps", 1}, {"trained_betas", {0.1, 1.0}}},
                      {"trained_betas", "value 1 is outside [0, 1)"});
  expect_config_error({{"original_inference_steps", 4294967346ULL}}, {"original_inference_steps", "out of range"});
  expect_config_error(json::array({1, 2}), {"JSON object"});
}

TEST(LcmSchedulerConfig, IgnoresUnknownKeysAndLcmIrrelevantOnes) {
  const json j = {{"_class_name", "PNDMScheduler"}, {"skip_prk_steps", true}, {"steps_offset", 1},
                  {"timestep_spacing", "trailing"}, {"thresholding", false}, {"trained_betas", nullptr}};
  const auto c = LcmSchedulerConfig::from_json(j, "x");
  EXPECT_EQ(c.beta_schedule, "scaled_linear");
  EXPECT_EQ(c.original_inference_steps, 50);
}

TEST(LcmSchedulerConfig, FileErrorsNameTheFile) {
  test::TempDir dir;
  EXPECT_THROW(
      {
        try {
          LcmSchedulerConfig::from_file(dir.path() / "missing.json");
        } catch (const ModelError& e) {
          EXPECT_NE(std::string(e.what()).find("missing.json"), std::string::npos);
          throw;
        }
      },
      ModelError);
  const fs::path bad = dir.path() / "broken.json";
  std::ofstream(bad) << "{\"beta_start\": 0.1,";
  try {
    LcmSchedulerConfig::from_file(bad);
    ADD_FAILURE() << "accepted broken JSON";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- schedule and tables

TEST(LcmScheduler, TimestepsForEveryStepCountOfTheIndex) {
  const json index = load_index();
  const LcmScheduler s = tiny_lcm_scheduler();
  int checked = 0;
  for (const auto& [n, expected] : index.at("scheduler").at("timesteps_strength_1").items()) {
    EXPECT_EQ(s.timesteps(std::stoi(n)), expected.get<std::vector<int>>()) << n << " steps";
    ++checked;
  }
  EXPECT_GE(checked, 14);
  // The README's examples.
  EXPECT_EQ(s.timesteps(4), (std::vector<int>{999, 759, 499, 259}));
  EXPECT_EQ(s.timesteps(8), (std::vector<int>{999, 879, 759, 639, 499, 379, 259, 139}));
}

TEST(LcmScheduler, StepCountOutsideTheScheduleIsAnInputError) {
  const LcmScheduler s = tiny_lcm_scheduler();
  for (int bad : {0, -3, 51}) {
    try {
      s.timesteps(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("between 1 and 50"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(s.timesteps(50).back(), 19);
}

TEST(LcmScheduler, OtherOriginalStepCountsFollowTheSameRule) {
  LcmSchedulerConfig c;
  c.original_inference_steps = 100;  // k = 10: training timesteps 9, 19, ..., 999
  const LcmScheduler s(c);
  EXPECT_EQ(s.timesteps(1), (std::vector<int>{999}));
  EXPECT_EQ(s.timesteps(3), (std::vector<int>{999, 669, 339}));  // floor(i * 33.33)
  EXPECT_EQ(s.timesteps(100).back(), 9);
}

TEST(LcmScheduler, BetasAndAlphasCumprodMatchDiffusers) {
  const LcmScheduler s = tiny_lcm_scheduler();
  const auto betas = load_f32("scheduler/betas.npy");
  const auto alphas_cumprod = load_f32("scheduler/alphas_cumprod.npy");
  ASSERT_EQ(betas.size(), 1000u);
  int identical_betas = 0;
  for (int t = 0; t < 1000; ++t) {
    EXPECT_LE(rel_diff(s.beta(t), betas[t]), kStepBound) << "beta " << t;
    EXPECT_LE(rel_diff(s.alpha_cumprod(t), alphas_cumprod[t]), kStepBound) << "alpha_cumprod " << t;
    identical_betas += s.beta(t) == betas[t];
  }
  // torch.linspace's AVX2 arithmetic is reproduced exactly (a plain formula gets ~270 wrong).
  EXPECT_EQ(identical_betas, 1000);
  EXPECT_THROW(s.alpha_cumprod(1000), std::out_of_range);
  EXPECT_THROW(s.alpha_cumprod(-1), std::out_of_range);
}

TEST(LcmScheduler, OtherBetaSchedules) {
  LcmSchedulerConfig linear;
  linear.beta_schedule = "linear";
  linear.beta_start = 0.0001;
  linear.beta_end = 0.02;
  const LcmScheduler a(linear);
  EXPECT_FLOAT_EQ(a.beta(0), 0.0001f);
  EXPECT_FLOAT_EQ(a.beta(999), 0.02f);
  EXPECT_NEAR(a.beta(500), 0.0001 + (0.02 - 0.0001) * 500 / 999, 1e-9);

  LcmSchedulerConfig cosine;
  cosine.beta_schedule = "squaredcos_cap_v2";
  const LcmScheduler b(cosine);
  auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
  EXPECT_FLOAT_EQ(b.beta(0), static_cast<float>(1 - alpha_bar(0.001) / alpha_bar(0)));
  EXPECT_FLOAT_EQ(b.beta(999), 0.999f);  // capped

  LcmSchedulerConfig trained;
  trained.num_train_timesteps = 4;
  trained.original_inference_steps = 2;
  trained.trained_betas = {0.1, 0.2, 0.3, 0.4};
  const LcmScheduler c(trained);
  EXPECT_FLOAT_EQ(c.alpha_cumprod(3), static_cast<float>(0.9 * 0.8 * 0.7 * 0.6));
  EXPECT_EQ(c.timesteps(2), (std::vector<int>{3, 1}));
}

TEST(LcmScheduler, BoundaryScalingsMatchTheTraces) {
  const json index = load_index();
  const LcmScheduler s = tiny_lcm_scheduler();
  int checked = 0;
  for (const auto& trace : index.at("scheduler").at("traces")) {
    for (const auto& step : trace.at("steps")) {
      const int t = step.at("timestep").get<int>();
      EXPECT_LE(rel_diff(s.c_skip(t), step.at("c_skip").get<double>()), kStepBound) << t;
      EXPECT_LE(rel_diff(s.c_out(t), step.at("c_out").get<double>()), kStepBound) << t;
      EXPECT_LE(rel_diff(s.alpha_cumprod(t), step.at("alpha_prod_t").get<double>()), kStepBound) << t;
      const int prev = step.at("prev_timestep_used").get<int>();
      EXPECT_LE(rel_diff(s.alpha_cumprod(prev), step.at("alpha_prod_t_prev").get<double>()), kStepBound) << prev;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 1 + 2 + 3 + 4 + 6 + 8);
  EXPECT_EQ(s.c_out(205), 1.0f);  // README: c_out rounds to exactly 1 for t >= 205
  EXPECT_LT(s.c_out(19), 1.0f);
  EXPECT_FLOAT_EQ(s.c_skip(0), 1.0f);
  EXPECT_EQ(s.c_out(0), 0.0f);
}

// ---------------------------------------------------------------- steps

// Replays a scheduler trace. With `own_noise` the generator draws the noise (the real use);
// otherwise the golden noise is passed in, which isolates the step arithmetic.
void replay_trace(const json& trace, bool own_noise) {
  const LcmScheduler s = tiny_lcm_scheduler();
  const int steps = trace.at("num_inference_steps").get<int>();
  const auto timesteps = s.timesteps(steps);
  ASSERT_EQ(timesteps, trace.at("timesteps").get<std::vector<int>>());
  std::vector<float> sample = load_f32(trace.at("initial_sample").get<std::string>());
  std::vector<float> denoised(sample.size());
  TorchGenerator gen(trace.at("step_noise_generator_seed").get<uint64_t>());
  for (int i = 0; i < steps; ++i) {
    const json& step = trace.at("steps").at(i);
    const std::string what = std::to_string(steps) + "-step trace, step " + std::to_string(i);
    ASSERT_EQ(step.at("noise_added").get<bool>(), LcmScheduler::step_adds_noise(i, timesteps)) << what;
    const auto model_output = load_f32(step.at("model_output").get<std::string>());
    if (own_noise) {
      s.step(model_output.data(), i, timesteps, sample.data(), denoised.data(), sample.size(), gen);
    } else {
      std::vector<float> noise;
      if (step.at("noise_added").get<bool>()) noise = load_f32(step.at("noise").get<std::string>());
      s.step(model_output.data(), i, timesteps, sample.data(), denoised.data(), sample.size(),
             noise.empty() ? nullptr : noise.data());
    }
    const auto ref_denoised = load_f32(step.at("denoised").get<std::string>());
    const auto ref_prev = load_f32(step.at("prev_sample").get<std::string>());
    expect_close(denoised, ref_denoised, kStepBound, what + " denoised");
    expect_close(sample, ref_prev, kStepBound, what + " prev_sample");
    if (!own_noise) {
      // Same inputs and torch's float32 order of operations give the same bits; this catches
      // reorderings (a reciprocal multiply, a fused multiply-add) that stay inside 1e-6.
      EXPECT_EQ(denoised, ref_denoised) << what << " denoised not bit-identical";
      EXPECT_EQ(sample, ref_prev) << what << " prev_sample not bit-identical";
    }
    // Keep going from the reference so one step's error does not hide the next step's.
    sample = load_f32(step.at("prev_sample").get<std::string>());
  }
}

TEST(LcmScheduler, TracesWithGoldenNoise) {
  const json index = load_index();
  for (const auto& trace : index.at("scheduler").at("traces")) replay_trace(trace, false);
}

TEST(LcmScheduler, TracesWithNoiseFromTheGenerator) {
  const json index = load_index();
  for (const auto& trace : index.at("scheduler").at("traces")) replay_trace(trace, true);
}

// Each pipeline run: the scheduler part of every step (UNet output from the reference).
TEST(LcmScheduler, PipelineRunsStepByStep) {
  const LcmScheduler s = tiny_lcm_scheduler();
  int steps_checked = 0;
  const json index = load_index();
  for (const auto& run : index.at("pipeline")) {
    const std::string name = run.at("dir").get<std::string>();
    const auto timesteps = s.timesteps(run.at("num_inference_steps").get<int>());
    ASSERT_EQ(timesteps, run.at("timesteps").get<std::vector<int>>()) << name;
    std::vector<float> latents = load_f32(run.at("latents_init").get<std::string>());
    std::vector<float> denoised(latents.size());
    for (size_t i = 0; i < timesteps.size(); ++i) {
      const json& step = run.at("steps").at(i);
      const auto model_pred = load_f32(step.at("model_pred").get<std::string>());
      std::vector<float> noise;
      if (step.contains("noise")) noise = load_f32(step.at("noise").get<std::string>());
      s.step(model_pred.data(), static_cast<int>(i), timesteps, latents.data(), denoised.data(), latents.size(),
             noise.empty() ? nullptr : noise.data());
      const std::string what = name + " step " + std::to_string(i);
      expect_close(denoised, load_f32(step.at("denoised").get<std::string>()), kStepBound, what + " denoised");
      expect_close(latents, load_f32(step.at("latents").get<std::string>()), kStepBound, what + " latents");
      latents = load_f32(step.at("latents").get<std::string>());
      ++steps_checked;
    }
    EXPECT_EQ(denoised, latents) << name << ": the last step returns denoised";
  }
  EXPECT_EQ(steps_checked, 39);
}

TEST(LcmScheduler, LastStepDrawsNoNoise) {
  const LcmScheduler s = tiny_lcm_scheduler();
  const std::vector<int> one_step = s.timesteps(1);
  std::vector<float> sample(32, 0.5f), model_output(32, 0.1f), denoised(32);
  TorchGenerator used(5), fresh(5);
  s.step(model_output.data(), 0, one_step, sample.data(), denoised.data(), 32, used);
  EXPECT_EQ(sample, denoised);
  EXPECT_EQ(used.randn(Shape{16}).data()[0], fresh.randn(Shape{16}).data()[0]);
}

TEST(LcmScheduler, BadStepArgumentsThrow) {
  const LcmScheduler s = tiny_lcm_scheduler();
  const auto ts = s.timesteps(2);
  std::vector<float> x(16, 0.f), m(16, 0.f), d(16);
  TorchGenerator gen(0);
  EXPECT_THROW(s.step(m.data(), 2, ts, x.data(), d.data(), 16, gen), std::out_of_range);
  EXPECT_THROW(s.step(m.data(), -1, ts, x.data(), d.data(), 16, gen), std::out_of_range);
  EXPECT_THROW(s.step(m.data(), 0, {999, 1000}, x.data(), d.data(), 16, gen), std::out_of_range);
  EXPECT_THROW(s.step(m.data(), 0, ts, x.data(), d.data(), 16, static_cast<const float*>(nullptr)),
               std::invalid_argument);
}

// The other parameterizations and clipping, against the diffusers formulas written out.
TEST(LcmScheduler, SampleAndVelocityPredictionsAndClipping) {
  const float x = 0.75f, m = -0.5f;
  const int t = 19;
  for (const std::string type : {"sample", "v_prediction", "epsilon"}) {
    for (bool clip : {false, true}) {
      LcmSchedulerConfig c;
      c.prediction_type = type;
      c.clip_sample = clip;
      c.clip_sample_range = 0.25;
      const LcmScheduler s(c);
      const std::vector<int> ts = {t};  // one step: sample becomes denoised
      float sample = x, denoised = 0;
      s.step(&m, 0, ts, &sample, &denoised, 1, static_cast<const float*>(nullptr));
      const double a = s.alpha_cumprod(t), sa = std::sqrt(a), sb = std::sqrt(1 - a);
      double x0 = type == "sample" ? m : type == "v_prediction" ? sa * x - sb * m : (x - sb * m) / sa;
      if (clip) x0 = std::clamp(x0, -0.25, 0.25);
      const double expected = s.c_out(t) * x0 + s.c_skip(t) * x;
      EXPECT_NEAR(denoised, expected, 1e-6 * std::fabs(expected) + 1e-7) << type << " clip=" << clip;
      EXPECT_EQ(sample, denoised);
    }
  }
}

}  // namespace
}  // namespace lcmd
