// What the CPU can do, read once at run time: the engine picks its default precision and
// kernels from this (AWS Lambda hosts vary; some lack AVX-512 or bf16).
#pragma once
#include <string>

namespace lcmd {

struct CpuInfo {
  std::string model;           // /proc/cpuinfo "model name" (or the architecture)
  std::string arch;            // "x86_64", "aarch64", ...
  int threads = 1;             // CPUs this process may run on
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_bf16 = false;    // vdpbf16ps: bf16 dot products at 2x the fp32 rate
  bool avx512_vnni = false;    // vpdpbusd: int8 dot products at 4x the fp32 rate
  bool amx = false;            // AMX tiles (bf16/int8)
  std::string features() const;  // e.g. "avx2 avx512f avx512_bf16 avx512_vnni"
};

const CpuInfo& cpu_info();

}  // namespace lcmd
