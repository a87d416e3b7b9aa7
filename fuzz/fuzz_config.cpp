// Model config JSON (what read_json_file parses from a config.json) into each component's config:
// the CLIP text encoder, UNet, VAE, TAESD and LCM scheduler configs, the last one also built into
// a scheduler and asked for the step counts a request may use. Each must accept the JSON or
// throw ModelError naming the field; nothing else is allowed to escape.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/config.h"
#include "models/taesd.h"
#include "sched/lcm_scheduler.h"

namespace {

using nlohmann::json;

template <typename Parse>
void expect_config_or_model_error(Parse parse) {
  try {
    parse();
  } catch (const lcmd::ModelError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // read_json_file's parse: a parse error there is a ModelError too, so it ends the input here.
  const json j = json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  const std::string source = "fuzz/config.json";
  expect_config_or_model_error([&] { lcmd::ClipTextConfig::from_json(j, source); });
  expect_config_or_model_error([&] { lcmd::UNetConfig::from_json(j, source); });
  expect_config_or_model_error([&] { lcmd::VaeConfig::from_json(j, source); });
  expect_config_or_model_error([&] { lcmd::TaesdConfig::from_json(j, source); });
  expect_config_or_model_error([&] {
    const lcmd::LcmScheduler scheduler(lcmd::LcmSchedulerConfig::from_json(j, source));
    const int max_steps = std::min(8, scheduler.config().original_inference_steps);  // more is an InputError
    for (int steps = 1; steps <= max_steps; ++steps) scheduler.timesteps(steps);
  });
  return 0;
}
