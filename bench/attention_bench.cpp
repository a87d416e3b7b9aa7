// g++ -O2 -std=c++20 -fopenmp -Isrc bench/attention_bench.cpp build-attn/liblcmd_ops.a build-attn/liblcmd_core.a -ldnnl -o build-attn/attention_bench
//
// Attention throughput on the SD1.5 shapes: GFLOP/s counted as 4*h*Sq*Sk*d (QK^T and PV,
// softmax not counted) and the share of the machine's peak. Build from the repo root with the
// line above after `ninja -C build-attn lcmd_ops`; add -DATTENTION_BENCH_PLAIN_ONLY to build
// against an ops library from before PackedKV/AttentionPrecision existed (the "before" column).
//
// Run it in its own session with a raised scheduler weight, so builds in other sessions do not
// take half of its CPU (see ../shared/notes/compute-probe.md):
//   setsid sh -c 'echo -15 > /proc/self/autogroup; exec build-attn/attention_bench'
// Options: --threads N (default: all cores), --min-seconds S per measurement (default 0.5),
//          --only SUBSTRING (shape names), --peak-fp32 / --peak-bf16 GFLOP/s (default 222 / 446),
//          --kernel NAME: time one kernel this CPU can run ("avx512", "avx2", "portable", ...),
//          as on a CPU where it would be the best one.
// Each line also prints `util`: process CPU seconds per wall second during the timed runs
// (about the thread count when nothing else competed for the cores).
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ops/ops.h"
#ifndef ATTENTION_BENCH_PLAIN_ONLY
#include "ops/attention_kernels.h"
#endif

namespace {

using lcmd::Tensor;
namespace ops = lcmd::ops;

struct Shape {
  const char* name;
  int heads;
  int64_t queries, keys, head_dim;
  bool causal;
};

const Shape kShapes[] = {
    {"h8 4096x4096 d40 (UNet@64 L0 self)", 8, 4096, 4096, 40, false},
    {"h8 1024x1024 d40 (UNet@32 L0 self)", 8, 1024, 1024, 40, false},
    {"h8 4096x77 d40 (UNet@64 L0 cross)", 8, 4096, 77, 40, false},
    {"h8 1024x77 d40 (UNet@32 L0 cross)", 8, 1024, 77, 40, false},
    {"h8 1024x1024 d80 (UNet@64 L1 self)", 8, 1024, 1024, 80, false},
    {"h8 256x256 d80 (UNet@32 L1 self)", 8, 256, 256, 80, false},
    {"h8 256x256 d160 (UNet@64 L2 self)", 8, 256, 256, 160, false},
    {"h8 64x64 d160 (UNet@32 L2 self)", 8, 64, 64, 160, false},
    {"h8 64x77 d160 (UNet@32 L2 cross)", 8, 64, 77, 160, false},
    {"h12 77x77 d64 causal (CLIP)", 12, 77, 77, 64, true},
    {"h1 1024x1024 d512 (VAE mid @256)", 1, 1024, 1024, 512, false},
    {"h1 4096x4096 d512 (VAE mid @512)", 1, 4096, 4096, 512, false},
};

double now_seconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

Tensor random_tensor(lcmd::Shape shape, unsigned seed) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = dist(rng);
  return t;
}

struct Timing {
  double median_s, util;
};

// Median time of f after two warm-up calls, over at least 5 calls and min_seconds.
Timing time_median(const std::function<void()>& f, double min_seconds) {
  f();
  f();
  std::vector<double> times;
  const double wall0 = now_seconds(CLOCK_MONOTONIC), cpu0 = now_seconds(CLOCK_PROCESS_CPUTIME_ID);
  while (times.size() < 5 || (now_seconds(CLOCK_MONOTONIC) - wall0 < min_seconds && times.size() < 1000)) {
    const double t0 = now_seconds(CLOCK_MONOTONIC);
    f();
    times.push_back(now_seconds(CLOCK_MONOTONIC) - t0);
  }
  const double wall = now_seconds(CLOCK_MONOTONIC) - wall0, cpu = now_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return {times[times.size() / 2], cpu / wall};
}

void report(const Shape& s, const char* variant, const Timing& t, double peak) {
  const double flops = 4.0 * s.heads * s.queries * s.keys * s.head_dim;
  const double gflops = flops / t.median_s * 1e-9;
  std::printf("%-36s %-12s %9.3f ms %7.1f GFLOP/s %5.1f %% of peak  util %.2f\n", s.name, variant, t.median_s * 1e3,
              gflops, 100.0 * gflops / peak, t.util);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  double min_seconds = 0.5, peak_fp32 = 222, peak_bf16 = 446;
  std::string only, kernel_name;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--threads" && has_value)
      threads = std::atoi(argv[++i]);
    else if (arg == "--min-seconds" && has_value)
      min_seconds = std::atof(argv[++i]);
    else if (arg == "--only" && has_value)
      only = argv[++i];
    else if (arg == "--peak-fp32" && has_value)
      peak_fp32 = std::atof(argv[++i]);
    else if (arg == "--peak-bf16" && has_value)
      peak_bf16 = std::atof(argv[++i]);
    else if (arg == "--kernel" && has_value)
      kernel_name = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: %s [--threads N] [--min-seconds S] [--only SUBSTRING] [--peak-fp32 G] [--peak-bf16 G] "
                   "[--kernel NAME]\n",
                   argv[0]);
      return 2;
    }
  }
#ifndef ATTENTION_BENCH_PLAIN_ONLY
  const ops::detail::AttentionKernel* kernel = nullptr;
  for (const auto* k : ops::detail::runnable_attention_kernels())
    if (kernel_name == k->name) kernel = k;
  if (!kernel_name.empty() && !kernel) {
    std::fprintf(stderr, "--kernel %s: not a kernel this CPU can run\n", kernel_name.c_str());
    return 2;
  }
#endif
  ops::set_num_threads(threads);
  ops::enable_flush_denormals();  // as the engine runs
#ifdef ATTENTION_BENCH_PLAIN_ONLY
  std::printf("threads %d, attention(q, k, v) only\n", ops::num_threads());
#else
  std::printf("threads %d, kernels: fp32 %s, bf16 %s\n", ops::num_threads(),
              ops::attention_kernel_name(ops::AttentionPrecision::FP32),
              ops::attention_kernel_name(ops::AttentionPrecision::BF16));
#endif
  for (const Shape& s : kShapes) {
    if (!only.empty() && std::string(s.name).find(only) == std::string::npos) continue;
    const int64_t channels = s.heads * s.head_dim;
    const Tensor q = random_tensor({1, s.queries, channels}, 1);
    const Tensor k = random_tensor({1, s.keys, channels}, 2), v = random_tensor({1, s.keys, channels}, 3);
#ifndef ATTENTION_BENCH_PLAIN_ONLY
    if (kernel) {
      const double peak = kernel->bf16 ? peak_bf16 : peak_fp32;
      auto run = [&] { ops::detail::attention_with(*kernel, q, k, v, s.heads, s.causal); };
      report(s, kernel->name, time_median(run, min_seconds), peak);
      const ops::PackedKV packed = ops::detail::pack_kv_with(*kernel, k, v, s.heads);
      report(s, "packed", time_median([&] { ops::attention(q, packed, s.causal); }, min_seconds), peak);
      continue;
    }
#endif
    report(s, "fp32", time_median([&] { ops::attention(q, k, v, s.heads, s.causal); }, min_seconds), peak_fp32);
#ifndef ATTENTION_BENCH_PLAIN_ONLY
    const ops::PackedKV packed(k, v, s.heads, ops::AttentionPrecision::FP32);
    report(s, "fp32 packed", time_median([&] { ops::attention(q, packed, s.causal); }, min_seconds), peak_fp32);
    const auto bf16 = ops::AttentionPrecision::BF16;
    report(s, "bf16", time_median([&] { ops::attention(q, k, v, s.heads, s.causal, bf16); }, min_seconds), peak_bf16);
    const ops::PackedKV packed_bf16(k, v, s.heads, bf16);
    report(s, "bf16 packed", time_median([&] { ops::attention(q, packed_bf16, s.causal); }, min_seconds), peak_bf16);
#endif
  }
  return 0;
}
