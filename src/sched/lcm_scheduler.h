// diffusers 0.24 LCMScheduler: the timestep schedule, the noise tables and one consistency
// step, in float32 with torch's order of operations (every product and sum rounded to float
// in the same order; the golden traces are reproduced bit for bit).
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sched/torch_rng.h"

namespace lcmd {

struct LcmSchedulerConfig {  // parsed from diffusers scheduler_config.json
  int num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::vector<double> trained_betas;            // when non-empty, replaces beta_schedule
  int original_inference_steps = 50;
  double timestep_scaling = 10.0;
  std::string prediction_type = "epsilon";  // epsilon | sample | v_prediction
  bool clip_sample = false;
  double clip_sample_range = 1.0;
  // Read for completeness: it only matters for a previous timestep < 0, which LCM schedules
  // never produce (the last step reuses its own timestep).
  bool set_alpha_to_one = true;
  // Keys diffusers' LCMScheduler accepts but ignores for LCM schedules (steps_offset,
  // timestep_spacing) are not stored. Unsupported options (thresholding, rescale_betas_zero_snr)
  // are refused by from_json.

  // Throws ModelError naming `source_name`, the field and the allowed values. Unknown keys
  // are ignored, as diffusers does.
  static LcmSchedulerConfig from_json(const nlohmann::json& j, const std::string& source_name);
  // Reads and parses a scheduler_config.json; errors name the file.
  static LcmSchedulerConfig from_file(const std::filesystem::path& path);
};

class LcmScheduler {
 public:
  explicit LcmScheduler(const LcmSchedulerConfig& cfg);

  const LcmSchedulerConfig& config() const { return cfg_; }

  // The set_timesteps(num_steps) schedule (strength 1): the original_inference_steps training
  // timesteps k*i - 1 (k = num_train_timesteps / original_inference_steps), reversed, sampled
  // at floor(i * original/num_steps). Throws InputError unless 1 <= num_steps <= original.
  std::vector<int> timesteps(int num_steps) const;

  // Tables, float32 as diffusers keeps them. t in [0, num_train_timesteps).
  float beta(int t) const;
  float alpha_cumprod(int t) const;
  // Boundary-condition scalings for timestep t, float32:
  //   c_skip = 0.25 / ((s t)^2 + 0.25),  c_out = s t / sqrt((s t)^2 + 0.25),  s = timestep_scaling.
  float c_skip(int t) const;
  float c_out(int t) const;

  // True when step `step_index` of `timesteps` injects noise (every step but the last).
  static bool step_adds_noise(int step_index, const std::vector<int>& timesteps);

  // One LCM step in place over n floats (elementwise, any layout):
  //   x0 from the prediction (epsilon: (x - sqrt(1-ā_t) eps) / sqrt(ā_t)), clipped if configured;
  //   denoised = c_out * x0 + c_skip * sample  -> denoised_out;
  //   not the last step: sample = sqrt(ā_prev) * denoised + sqrt(1-ā_prev) * z, ā_prev taken at
  //   the next timestep of the list and z = n floats drawn from gen; last step: sample = denoised.
  // The noise is drawn in the order of the buffer, so to match torch the buffers must be in
  // the layout torch draws in (NCHW for latents); otherwise use the overload below.
  void step(const float* model_output, int step_index, const std::vector<int>& timesteps, float* sample,
            float* denoised_out, size_t n, TorchGenerator& gen) const;

  // The same step with the noise given by the caller (n floats, in the buffers' layout); noise is
  // read only when step_adds_noise() and may be null otherwise.
  void step(const float* model_output, int step_index, const std::vector<int>& timesteps, float* sample,
            float* denoised_out, size_t n, const float* noise) const;

 private:
  void check_timestep(int t) const;
  void check_step(int step_index, const std::vector<int>& timesteps) const;

  LcmSchedulerConfig cfg_;
  std::vector<float> betas_;
  std::vector<float> alphas_cumprod_;
};

}  // namespace lcmd
