// Helpers of the serve tests: the tiny golden model, the CLI's image for a request (the
// reference every front end must reproduce), PNG decoding, and a running `lcmd serve`.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "child_process.h"
#include "lcmd/engine.h"

namespace lcmd::test {

std::filesystem::path tiny_model();  // golden_dir()/tiny-lcm

// One in-process Engine on the tiny model, loaded on first use and shared by the tests.
std::shared_ptr<const Engine> tiny_engine();

// The PNG `lcmd generate` writes for the request (the reference image).
std::vector<uint8_t> cli_png(const std::string& prompt, uint64_t seed, int width, int height, int steps = 4);

// Width and height of a PNG, or {0, 0} when it does not decode.
std::pair<int, int> png_size(const std::vector<uint8_t>& png);
// The PNG's pixels as height x width x 3 bytes, or empty when it does not decode.
std::vector<uint8_t> png_rgb(const std::vector<uint8_t>& png);

// VmRSS (bytes) and the number of open file descriptors of a running process, from /proc.
int64_t resident_bytes_of(pid_t pid);
int open_fd_count(pid_t pid);

std::vector<uint8_t> bytes_of(const std::string& text);

// `lcmd serve --model MODEL --host 127.0.0.1 --port 0 <extra args>`, up and listening.
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& extra_args = {},
                        const std::filesystem::path& model = tiny_model(), const std::vector<std::string>& env = {});
  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  ChildProcess& process() { return *process_; }
  // VmRSS of the server, bytes.
  int64_t resident_bytes() const;
  // The value of an unlabelled sample (or one with exactly these labels) from GET /metrics.
  double metric(const std::string& name_and_labels) const;

 private:
  std::unique_ptr<ChildProcess> process_;
  int port_ = 0;
};

// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace lcmd::test
