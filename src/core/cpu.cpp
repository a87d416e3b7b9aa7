#include "core/cpu.h"

#include <sched.h>

#include <fstream>
#include <thread>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace lcmd {

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "";
}

int usable_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::thread::hardware_concurrency());
}

CpuInfo detect() {
  CpuInfo c;
  c.threads = usable_threads();
#if defined(__x86_64__)
  c.arch = "x86_64";
  __builtin_cpu_init();
  c.avx2 = __builtin_cpu_supports("avx2");
  c.avx512f = __builtin_cpu_supports("avx512f");  // also means the OS saves the AVX-512 state
  unsigned a = 0, b = 0, cx = 0, d = 0;
  if (c.avx512f && __get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
    c.avx512_vnni = (cx >> 11) & 1;
    c.amx = ((d >> 22) & 1) && ((d >> 24) & 1);  // AMX-BF16 and AMX-TILE (the OS must also allow it)
    if (__get_cpuid_count(7, 1, &a, &b, &cx, &d)) c.avx512_bf16 = (a >> 5) & 1;
  }
#elif defined(__aarch64__)
  c.arch = "aarch64";
#else
  c.arch = "unknown";
#endif
  c.model = cpu_model();
  if (c.model.empty()) c.model = c.arch;
  return c;
}

}  // namespace

std::string CpuInfo::features() const {
  std::string s;
  auto add = [&](bool has, const char* name) {
    if (has) s += (s.empty() ? "" : " ") + std::string(name);
  };
  add(avx2, "avx2");
  add(avx512f, "avx512f");
  add(avx512_bf16, "avx512_bf16");
  add(avx512_vnni, "avx512_vnni");
  add(amx, "amx");
  return s.empty() ? "baseline" : s;
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

}  // namespace lcmd
