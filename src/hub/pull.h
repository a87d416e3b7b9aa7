// `lcmd pull`: the files of a diffusers SD1.5 LCM folder from the HuggingFace hub, each downloaded
// to "<file>.incomplete", checked against the hub's checksum and renamed into place only when
// complete. An interrupted download stays as ".incomplete" and the next run resumes it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace lcmd::hub {

inline constexpr const char* kDefaultRepo = "SimianLuo/LCM_Dreamshaper_v7";
inline constexpr const char* kDefaultEndpoint = "https://huggingface.co";

struct PullOptions {
  std::string repo = kDefaultRepo;
  std::string revision = "main";
  std::string variant;           // "" (plain weights) or "fp16" (the *.fp16.safetensors files)
  std::filesystem::path dir;     // empty: the repository's name, e.g. "LCM_Dreamshaper_v7"
  std::string endpoint = kDefaultEndpoint;
  std::string token;             // sent as "Authorization: Bearer" to the endpoint only
  bool progress = false;         // a progress bar on stderr
  long connect_timeout_s = 30;
  long stall_timeout_s = 60;
};

// Endpoint and token from HF_ENDPOINT and HF_TOKEN, the variables huggingface_hub reads.
void apply_environment(PullOptions& options);

// Checks repo ("name" or "owner/name"), revision and variant; throws InputError naming the flag.
void validate(const PullOptions& options);

// The repository paths the engine reads (see io/model_folder.h), in download order: small files first.
std::vector<std::string> model_files(const std::string& variant);

// https://huggingface.co/<repo>/resolve/<revision>/<path>, the revision percent-encoded ("refs/pr/1").
std::string resolve_url(const PullOptions& options, const std::string& path);

std::filesystem::path target_dir(const PullOptions& options);

struct PulledFile {
  std::string path;         // in the repository
  uint64_t bytes = 0;
  bool already_present = false;
  std::string verified;     // "sha256", "git sha1", or "none" when the hub gave no checksum
  uint64_t resumed_from = 0;
};

// Downloads every missing file of model_files() into target_dir(). Files already present are kept.
// `on_file` is told about each file when it is done. Throws PullError (one line naming the
// repository and the file) on any failure; files finished before it stay in place.
std::vector<PulledFile> pull_model(const PullOptions& options,
                                   const std::function<void(const PulledFile&)>& on_file = {});

}  // namespace lcmd::hub
