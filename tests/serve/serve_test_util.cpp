#include "serve_test_util.h"

#include <png.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "serve/httplib_include.h"
#include "support/test_support.h"

namespace lcmd::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

fs::path tiny_model() { return golden_dir() / "tiny-lcm"; }

std::shared_ptr<const Engine> tiny_engine() {
  static const std::shared_ptr<const Engine> engine = Engine::load(tiny_model());
  return engine;
}

std::vector<uint8_t> cli_png(const std::string& prompt, uint64_t seed, int width, int height, int steps) {
  const TempDir dir;
  const fs::path out = dir.path() / "cli.png";
  const CommandResult r =
      run_command({LCMD_BINARY, "generate", "--model", tiny_model().string(), "--prompt", prompt, "--seed",
                   std::to_string(seed), "--width", std::to_string(width), "--height", std::to_string(height),
                   "--steps", std::to_string(steps), "--output", out.string()},
                  120s);
  if (r.status != 0) throw std::runtime_error("lcmd generate failed: " + r.err);
  std::ifstream in(out, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::pair<int, int> png_size(const std::vector<uint8_t>& png) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, png.data(), png.size())) return {0, 0};
  image.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> rgb(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, rgb.data(), 0, nullptr)) return {0, 0};
  return {static_cast<int>(image.width), static_cast<int>(image.height)};
}

std::vector<uint8_t> png_rgb(const std::vector<uint8_t>& png) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, png.data(), png.size())) return {};
  image.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> rgb(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, rgb.data(), 0, nullptr)) return {};
  return rgb;
}

int64_t resident_bytes_of(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // kB
  return -1;
}

int open_fd_count(pid_t pid) {
  std::error_code error;
  int count = 0;
  for (fs::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", error), end; !error && it != end;
       it.increment(error))
    ++count;
  return error ? -1 : count;
}

std::vector<uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

ServeProcess::ServeProcess(const std::vector<std::string>& extra_args, const fs::path& model,
                           const std::vector<std::string>& env) {
  std::vector<std::string> argv = {LCMD_BINARY, "serve",     "--model", model.string(),
                                   "--host",    "127.0.0.1", "--port",  "0"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  process_ = std::make_unique<ChildProcess>(argv, env);
  const auto line = process_->wait_for_line("\"listening\"", 60s);
  if (!line) throw std::runtime_error("lcmd serve did not start: " + process_->stderr_text());
  port_ = nlohmann::json::parse(*line).at("port").get<int>();
}

int64_t ServeProcess::resident_bytes() const { return resident_bytes_of(process_->pid()); }

double ServeProcess::metric(const std::string& name_and_labels) const {
  httplib::Client client("127.0.0.1", port_);
  client.set_read_timeout(10, 0);
  const auto res = client.Get("/metrics");
  if (!res || res->status != 200) throw std::runtime_error("GET /metrics failed");
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(name_and_labels + " ", 0) == 0) return std::stod(line.substr(name_and_labels.size() + 1));
  throw std::runtime_error("no metric " + name_and_labels + " in:\n" + res->body);
}

}  // namespace lcmd::test
