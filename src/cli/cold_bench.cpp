// `lcmd bench --cold`: what a fresh process (a Lambda cold start) pays before its first image.
// Each run starts `lcmd generate --verbose` as a new process and reads back, on the shared
// monotonic clock, process start -> model ready and -> first image done; once with the model's
// files in the page cache and once with their pages evicted first (posix_fadvise DONTNEED), so
// the cold figure is bounded by the disk. Page-cache residency is measured before every run
// (mincore), so an eviction the machine refuses shows as such instead of a wrong "cold" number.
#include "cli/cold_bench.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cpu.h"
#include "core/error.h"

namespace lcmd {

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> model_files(const fs::path& model) {
  if (!fs::is_directory(model)) return {model};
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(model))
    if (e.is_regular_file()) files.push_back(e.path());
  return files;
}

// Bytes of the files and how many of them are in the page cache.
std::pair<uint64_t, uint64_t> residency(const std::vector<fs::path>& files) {
  const long page = sysconf(_SC_PAGESIZE);
  uint64_t total = 0, resident = 0;
  for (const fs::path& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    const uint64_t size = fs::file_size(f);
    total += size;
    if (size > 0) {
      void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
      if (map != MAP_FAILED) {
        std::vector<unsigned char> pages((size + page - 1) / page);
        if (mincore(map, size, pages.data()) == 0)
          for (unsigned char p : pages) resident += (p & 1) ? static_cast<uint64_t>(page) : 0;
        munmap(map, size);
      }
    }
    ::close(fd);
  }
  return {total, std::min(resident, total)};
}

// Asks the kernel to drop the files' clean pages from the page cache.
void evict(const std::vector<fs::path>& files) {
  for (const fs::path& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    fdatasync(fd);  // dirty pages cannot be dropped
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

double now_ns() {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct ColdRun {
  double ready_ms = 0, first_image_ms = 0, resident_before = 0, peak_rss_mb = 0;
};

// The value after `label` on its line of the child's --verbose output.
double field(const std::string& text, const std::string& label) {
  const size_t at = text.find(label);
  if (at == std::string::npos) throw std::runtime_error("bench --cold: the child printed no '" + label + "':\n" + text);
  return std::atof(text.c_str() + at + label.size());
}

ColdRun run_once(const fs::path& model, const std::vector<fs::path>& files, const std::string& precision, bool cold,
                 const fs::path& scratch) {
  if (cold) evict(files);
  const auto [total, resident] = residency(files);
  const fs::path out = scratch / "cold.png", err = scratch / "cold.log";
  const double t0 = now_ns();
  const pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "bench --cold: fork");
  if (pid == 0) {
    const int log = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log >= 0) dup2(log, STDERR_FILENO);
    const std::string t0_text = std::to_string(static_cast<long long>(t0));
    setenv("LCMD_T0_NS", t0_text.c_str(), 1);
    execl("/proc/self/exe", "lcmd", "generate", "--model", model.c_str(), "--prompt", "a lighthouse on a cliff at dawn",
          "--seed", "1", "--precision", precision.c_str(), "--output", out.c_str(), "--verbose", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  const double done_ms = (now_ns() - t0) / 1e6;
  std::ifstream in(err);
  std::stringstream log;
  log << in.rdbuf();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("bench --cold: `lcmd generate` failed:\n" + log.str());
  ColdRun r;
  r.ready_ms = field(log.str(), "ready after start");
  r.first_image_ms = done_ms;  // process start -> image written and the process gone
  r.resident_before = total ? static_cast<double>(resident) / total : 0;
  r.peak_rss_mb = field(log.str(), "peak RSS");
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int run_cold_bench(const fs::path& model, const std::string& precision, int repeat, bool json) {
  if (!fs::exists(model)) throw InputError("--model " + model.string() + ": no such model folder or file");
  const std::vector<fs::path> files = model_files(model);
  const fs::path scratch = fs::temp_directory_path() / ("lcmd-cold-" + std::to_string(getpid()));
  fs::create_directories(scratch);
  struct Scratch {
    fs::path dir;
    ~Scratch() { std::error_code ec; fs::remove_all(dir, ec); }
  } cleanup{scratch};

  nlohmann::json out{{"model", model.string()}, {"bytes", residency(files).first}, {"precision", precision},
                     {"cpu", cpu_info().model}};
  run_once(model, files, precision, false, scratch);  // fills the page cache
  for (const bool cold : {false, true}) {
    std::vector<double> ready, first, resident, rss;
    for (int i = 0; i < repeat; ++i) {
      const ColdRun r = run_once(model, files, precision, cold, scratch);
      ready.push_back(r.ready_ms), first.push_back(r.first_image_ms), resident.push_back(r.resident_before);
      rss.push_back(r.peak_rss_mb);
    }
    const char* name = cold ? "evicted" : "page_cache";
    out[name] = {{"ready_ms", median(ready)},
                 {"first_image_ms", median(first)},
                 {"resident_before", median(resident)},
                 {"peak_rss_mb", median(rss)},
                 {"runs", repeat}};
    if (!json)
      std::printf("%-10s %-48s ready %8.0f ms  first image %8.0f ms  (%3.0f%% of %.0f MB cached before; peak RSS %.0f MB; "
                  "median of %d)\n",
                  cold ? "evicted" : "page cache", model.string().c_str(), median(ready), median(first),
                  100 * median(resident), out["bytes"].get<double>() / 1e6, median(rss), repeat);
  }
  if (json) std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace lcmd
