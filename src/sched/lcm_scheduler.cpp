#include "sched/lcm_scheduler.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>

#include "core/error.h"

// Float expressions below are written one torch op at a time; each must round to float on its
// own. The project builds in ISO C++ mode, where GCC does not contract a*b+c into an FMA.

namespace lcmd {

namespace {

constexpr int kMaxTrainTimesteps = 100000;

// ---------------------------------------------------------------- config parsing

[[noreturn]] void config_error(const std::string& source, const std::string& field, const std::string& what) {
  throw ModelError(source + ": scheduler config field '" + field + "' " + what);
}

std::string json_type(const nlohmann::json& v) { return v.type_name(); }

// Each reader leaves `out` unchanged when the key is absent.
void read_int(const nlohmann::json& j, const std::string& source, const std::string& key, int* out) {
  if (!j.contains(key)) return;
  const auto& v = j.at(key);
  if (!v.is_number_integer()) config_error(source, key, "must be an integer, got " + json_type(v));
  const bool too_big = v.is_number_unsigned() ? v.get<uint64_t>() > INT32_MAX : v.get<int64_t>() > INT32_MAX;
  if (too_big || (!v.is_number_unsigned() && v.get<int64_t>() < INT32_MIN))
    config_error(source, key, "is out of range: " + v.dump());
  const auto value = v.get<int64_t>();
  *out = static_cast<int>(value);
}

void read_number(const nlohmann::json& j, const std::string& source, const std::string& key, double* out) {
  if (!j.contains(key)) return;
  const auto& v = j.at(key);
  if (!v.is_number()) config_error(source, key, "must be a number, got " + json_type(v));
  *out = v.get<double>();
  if (!std::isfinite(*out)) config_error(source, key, "must be finite");
}

void read_bool(const nlohmann::json& j, const std::string& source, const std::string& key, bool* out) {
  if (!j.contains(key)) return;
  const auto& v = j.at(key);
  if (!v.is_boolean()) config_error(source, key, "must be true or false, got " + json_type(v));
  *out = v.get<bool>();
}

void read_choice(const nlohmann::json& j, const std::string& source, const std::string& key,
                 const std::vector<std::string>& allowed, std::string* out) {
  if (!j.contains(key)) return;
  const auto& v = j.at(key);
  std::string allowed_list;
  for (const auto& a : allowed) allowed_list += (allowed_list.empty() ? "\"" : ", \"") + a + "\"";
  if (!v.is_string()) config_error(source, key, "must be a string (one of " + allowed_list + "), got " + json_type(v));
  const auto value = v.get<std::string>();
  if (std::find(allowed.begin(), allowed.end(), value) == allowed.end())
    config_error(source, key, "is \"" + value + "\"; supported values: " + allowed_list);
  *out = value;
}

// Options this port does not implement: accepted only at their "off" value.
void refuse_if_true(const nlohmann::json& j, const std::string& source, const std::string& key,
                    const std::string& reason) {
  bool value = false;
  read_bool(j, source, key, &value);
  if (value) config_error(source, key, "is true; only false is supported (" + reason + ")");
}

void read_trained_betas(const nlohmann::json& j, const std::string& source, std::vector<double>* out) {
  const std::string key = "trained_betas";
  if (!j.contains(key) || j.at(key).is_null()) return;
  const auto& v = j.at(key);
  if (!v.is_array()) config_error(source, key, "must be null or an array of numbers, got " + json_type(v));
  out->clear();
  for (const auto& b : v) {
    if (!b.is_number()) config_error(source, key, "must hold only numbers, found " + json_type(b));
    out->push_back(b.get<double>());
  }
}

void validate(const LcmSchedulerConfig& c, const std::string& source) {
  // SD's schedulers train on 1000 steps; the bound keeps a hostile config from allocating GBs.
  if (c.num_train_timesteps < 1 || c.num_train_timesteps > kMaxTrainTimesteps)
    config_error(source, "num_train_timesteps",
                 "must be between 1 and " + std::to_string(kMaxTrainTimesteps) + ", got " +
                     std::to_string(c.num_train_timesteps));
  if (c.original_inference_steps < 1 || c.original_inference_steps > c.num_train_timesteps)
    config_error(source, "original_inference_steps",
                 "must be between 1 and num_train_timesteps (" + std::to_string(c.num_train_timesteps) + "), got " +
                     std::to_string(c.original_inference_steps));
  if (!c.trained_betas.empty() && c.trained_betas.size() != static_cast<size_t>(c.num_train_timesteps))
    config_error(source, "trained_betas",
                 "has " + std::to_string(c.trained_betas.size()) + " values; num_train_timesteps is " +
                     std::to_string(c.num_train_timesteps));
  for (size_t t = 0; t < c.trained_betas.size(); ++t)
    if (!(c.trained_betas[t] >= 0 && c.trained_betas[t] < 1))
      config_error(source, "trained_betas", "value " + std::to_string(t) + " is outside [0, 1)");
  if (c.trained_betas.empty() && c.beta_schedule != "squaredcos_cap_v2") {
    if (c.beta_start < 0) config_error(source, "beta_start", "must be >= 0");
    if (c.beta_end < 0) config_error(source, "beta_end", "must be >= 0");
  }
  if (c.clip_sample && !(c.clip_sample_range > 0))
    config_error(source, "clip_sample_range", "must be > 0 when clip_sample is true");
}

// ---------------------------------------------------------------- noise tables

// torch.linspace(start, end, steps, dtype=float32) as torch 1.13's AVX2 CPU kernel computes
// it: the first half counts up from start, the second half down from end, in vectors of 8
// whose base is start + step*i (or end - step*(steps-1-i)) with the multiply-add fused by the
// compiler, then base + k*step per lane; the last < 16 values use the scalar (also fused)
// formula. This reproduces diffusers' betas bit for bit; a plain formula is 1 ulp off on a
// quarter of them.
std::vector<float> torch_linspace_f32(double start_d, double end_d, int steps) {
  const float start = static_cast<float>(start_d), end = static_cast<float>(end_d);
  std::vector<float> out(static_cast<size_t>(steps));
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  auto value_at = [&](int i) {
    return i < halfway ? std::fma(step, static_cast<float>(i), start)
                       : std::fma(-step, static_cast<float>(steps - i - 1), end);
  };
  constexpr int kLanes = 8;
  int i = 0;
  for (; i + 2 * kLanes <= steps; i += kLanes) {
    const float base = value_at(i);
    for (int k = 0; k < kLanes; ++k) out[static_cast<size_t>(i + k)] = std::fma(static_cast<float>(k), step, base);
  }
  for (; i < steps; ++i) out[static_cast<size_t>(i)] = value_at(i);
  return out;
}

// diffusers betas_for_alpha_bar(N) with the cosine alpha_bar ("squaredcos_cap_v2"), in
// Python doubles, then float32.
std::vector<float> cosine_betas(int n) {
  auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2);
    return c * c;
  };
  std::vector<float> betas(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
    betas[static_cast<size_t>(i)] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return betas;
}

std::vector<float> make_betas(const LcmSchedulerConfig& c) {
  if (!c.trained_betas.empty()) return {c.trained_betas.begin(), c.trained_betas.end()};
  if (c.beta_schedule == "linear") return torch_linspace_f32(c.beta_start, c.beta_end, c.num_train_timesteps);
  if (c.beta_schedule == "scaled_linear") {
    auto betas = torch_linspace_f32(std::sqrt(c.beta_start), std::sqrt(c.beta_end), c.num_train_timesteps);
    for (float& b : betas) b = b * b;
    return betas;
  }
  return cosine_betas(c.num_train_timesteps);  // squaredcos_cap_v2; other names are refused when parsing
}

}  // namespace

LcmSchedulerConfig LcmSchedulerConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw ModelError(source + ": scheduler config must be a JSON object");
  LcmSchedulerConfig c;
  read_int(j, source, "num_train_timesteps", &c.num_train_timesteps);
  read_number(j, source, "beta_start", &c.beta_start);
  read_number(j, source, "beta_end", &c.beta_end);
  read_choice(j, source, "beta_schedule", {"linear", "scaled_linear", "squaredcos_cap_v2"}, &c.beta_schedule);
  read_trained_betas(j, source, &c.trained_betas);
  read_int(j, source, "original_inference_steps", &c.original_inference_steps);
  read_number(j, source, "timestep_scaling", &c.timestep_scaling);
  read_choice(j, source, "prediction_type", {"epsilon", "sample", "v_prediction"}, &c.prediction_type);
  read_bool(j, source, "clip_sample", &c.clip_sample);
  read_number(j, source, "clip_sample_range", &c.clip_sample_range);
  read_bool(j, source, "set_alpha_to_one", &c.set_alpha_to_one);
  refuse_if_true(j, source, "thresholding", "dynamic thresholding is not implemented");
  refuse_if_true(j, source, "rescale_betas_zero_snr", "zero-terminal-SNR rescaling is not implemented");
  validate(c, source);
  return c;
}

LcmSchedulerConfig LcmSchedulerConfig::from_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw ModelError(path.string() + ": cannot open the scheduler config");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(path.string() + ": invalid JSON: " + e.what());
  }
  return from_json(j, path.string());
}

// ---------------------------------------------------------------- scheduler

LcmScheduler::LcmScheduler(const LcmSchedulerConfig& cfg) : cfg_(cfg) {
  validate(cfg_, "LcmSchedulerConfig");  // also for configs built in code, not parsed
  betas_ = make_betas(cfg_);
  alphas_cumprod_.resize(betas_.size());
  // torch.cumprod of a float32 tensor accumulates in double on the CPU and stores float.
  double product = 1.0;
  for (size_t t = 0; t < betas_.size(); ++t) {
    const float alpha = 1.0f - betas_[t];
    product *= alpha;
    alphas_cumprod_[t] = static_cast<float>(product);
    if (!(betas_[t] >= 0.0f && betas_[t] < 1.0f))
      throw ModelError("scheduler betas must lie in [0, 1); beta[" + std::to_string(t) + "] = " +
                       std::to_string(betas_[t]));
  }
}

std::vector<int> LcmScheduler::timesteps(int num_steps) const {
  const int original = cfg_.original_inference_steps;
  if (num_steps < 1 || num_steps > original)
    throw InputError("number of inference steps must be between 1 and " + std::to_string(original) +
                     " (the scheduler's original_inference_steps), got " + std::to_string(num_steps));
  const int k = cfg_.num_train_timesteps / original;
  // numpy.linspace(0, original, num_steps, endpoint=False) = i * (original / num_steps), floored.
  const double spacing = static_cast<double>(original) / num_steps;
  std::vector<int> out(static_cast<size_t>(num_steps));
  for (int i = 0; i < num_steps; ++i) {
    const int index_from_end = static_cast<int>(std::floor(i * spacing));  // into the reversed list
    out[static_cast<size_t>(i)] = (original - index_from_end) * k - 1;
  }
  return out;
}

void LcmScheduler::check_timestep(int t) const {
  if (t < 0 || t >= cfg_.num_train_timesteps)
    throw std::out_of_range("timestep " + std::to_string(t) + " is outside [0, " +
                            std::to_string(cfg_.num_train_timesteps) + ")");
}

float LcmScheduler::beta(int t) const {
  check_timestep(t);
  return betas_[static_cast<size_t>(t)];
}

float LcmScheduler::alpha_cumprod(int t) const {
  check_timestep(t);
  return alphas_cumprod_[static_cast<size_t>(t)];
}

// diffusers: sigma_data = 0.5; scaled = t * timestep_scaling (int tensor * Python float ->
// float32); c_skip = 0.25 / (scaled**2 + 0.25); c_out = scaled / (scaled**2 + 0.25) ** 0.5.
float LcmScheduler::c_skip(int t) const {
  const float scaled = static_cast<float>(t) * static_cast<float>(cfg_.timestep_scaling);
  const float denom = scaled * scaled + 0.25f;
  return 0.25f / denom;
}

float LcmScheduler::c_out(int t) const {
  const float scaled = static_cast<float>(t) * static_cast<float>(cfg_.timestep_scaling);
  const float denom = scaled * scaled + 0.25f;
  return scaled / std::sqrt(denom);
}

bool LcmScheduler::step_adds_noise(int step_index, const std::vector<int>& timesteps) {
  return step_index + 1 < static_cast<int>(timesteps.size());
}

void LcmScheduler::check_step(int step_index, const std::vector<int>& timesteps) const {
  if (step_index < 0 || step_index >= static_cast<int>(timesteps.size()))
    throw std::out_of_range("step index " + std::to_string(step_index) + " is outside the " +
                            std::to_string(timesteps.size()) + "-step schedule");
  for (int t : timesteps) check_timestep(t);
}

void LcmScheduler::step(const float* model_output, int step_index, const std::vector<int>& timesteps, float* sample,
                        float* denoised_out, size_t n, TorchGenerator& gen) const {
  check_step(step_index, timesteps);
  std::vector<float> noise;
  if (step_adds_noise(step_index, timesteps)) {
    noise.resize(n);
    gen.randn(noise.data(), n);
  }
  step(model_output, step_index, timesteps, sample, denoised_out, n, noise.empty() ? nullptr : noise.data());
}

void LcmScheduler::step(const float* model_output, int step_index, const std::vector<int>& timesteps, float* sample,
                        float* denoised_out, size_t n, const float* noise) const {
  check_step(step_index, timesteps);
  const bool add_noise = step_adds_noise(step_index, timesteps);
  if (add_noise && noise == nullptr)
    throw std::invalid_argument("LcmScheduler::step: step " + std::to_string(step_index) + " needs noise");
  const int t = timesteps[static_cast<size_t>(step_index)];
  // The last step has no next timestep; diffusers then uses t itself (its noise term is unused).
  const int t_prev = add_noise ? timesteps[static_cast<size_t>(step_index) + 1] : t;

  const float alpha_t = alpha_cumprod(t), alpha_prev = alpha_cumprod(t_prev);
  const float sqrt_alpha_t = std::sqrt(alpha_t), sqrt_beta_t = std::sqrt(1.0f - alpha_t);
  const float sqrt_alpha_prev = std::sqrt(alpha_prev), sqrt_beta_prev = std::sqrt(1.0f - alpha_prev);
  const float skip = c_skip(t), out = c_out(t);
  const float clip = static_cast<float>(cfg_.clip_sample_range);
  enum class Prediction { Epsilon, Sample, Velocity };
  const Prediction prediction = cfg_.prediction_type == "epsilon" ? Prediction::Epsilon
                                : cfg_.prediction_type == "sample" ? Prediction::Sample
                                                                   : Prediction::Velocity;

  for (size_t i = 0; i < n; ++i) {
    const float x = sample[i], m = model_output[i];
    float x0;
    switch (prediction) {
      case Prediction::Epsilon: x0 = (x - sqrt_beta_t * m) / sqrt_alpha_t; break;
      case Prediction::Sample: x0 = m; break;
      case Prediction::Velocity: x0 = sqrt_alpha_t * x - sqrt_beta_t * m; break;
    }
    if (cfg_.clip_sample) x0 = std::clamp(x0, -clip, clip);
    const float denoised = out * x0 + skip * x;
    denoised_out[i] = denoised;
    sample[i] = add_noise ? sqrt_alpha_prev * denoised + sqrt_beta_prev * noise[i] : denoised;
  }
}

}  // namespace lcmd
