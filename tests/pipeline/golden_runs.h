// Helpers shared by the pipeline tests that replay diffusers' golden runs.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "lcmd/engine.h"
#include "support/test_support.h"

namespace lcmd::test {

// The request of one index.json pipeline run (prompt, negative prompt, size, steps, guidance).
inline GenerateRequest request_of(const nlohmann::json& run) {
  GenerateRequest req;
  req.prompt = run["prompt"];
  if (run.contains("negative_prompt") && run["negative_prompt"].is_string()) req.negative_prompt = run["negative_prompt"];
  req.width = run["width"];
  req.height = run["height"];
  req.steps = run["num_inference_steps"];
  req.guidance_scale = run["guidance_scale"];
  validate(req);
  return req;
}

// A tensor against a reference .npy with the fp32 bounds (same element count).
inline void expect_tensor_close(const Tensor& ours, const std::filesystem::path& ref_file, const std::string& what) {
  const Tensor ref = load_npy_tensor(ref_file);
  ASSERT_EQ(ours.numel(), ref.numel()) << what;
  const std::string err = check_close(ours.data(), ref.data(), static_cast<size_t>(ref.numel()));
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

}  // namespace lcmd::test
