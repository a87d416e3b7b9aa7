// Conv2d / Linear throughput per precision on the Stable Diffusion 1.5 shapes (UNet at a 32x32
// latent, VAE decoder for a 256x256 image, the transformer GEMMs), against the machine's peak.
//
// Build (after `ninja -C build-prec lcmd_ops`), from the repository root:
//   g++ -O2 -std=c++20 -fopenmp -Isrc bench/ops_bench.cpp build-prec/liblcmd_ops.a build-prec/liblcmd_core.a -ldnnl -o build-prec/ops_bench
// Run: build-prec/ops_bench [--threads N] [--seconds S] [--peaks F32,BF16,INT8]
//
// Each op is timed as the engine calls it (float32 NHWC in and out, so bf16 conversion, int8
// quantization and Winograd's layout changes are included), median over repetitions filling
// --seconds (default 0.5) after two warm-up calls. GFLOP/s counts 2 x the nominal multiply-adds
// (Winograd does fewer, hence its "% of peak" above 100). "err" is the relative L2 distance to
// the fp32 layer's output on the same input; "util" the CPU seconds this process used per wall
// second while timing (about the thread count when nothing else competes). The default peaks are the 2-thread fp32 FMA,
// vdpbf16ps and vpdpbusd rates measured on the 2-core Zen 4 development machine
// (../shared/notes/compute-probe.md); pass --peaks for another machine.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/ops.h"

namespace {

using lcmd::Precision;
using lcmd::Shape;
using lcmd::Tensor;

struct Options {
  int threads = 0;
  double seconds = 0.5;
  double peaks[3] = {222.6, 446.5, 887.9};  // GFLOP/s: fp32, bf16, int8 (by Precision value)
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--threads") {
      o.threads = std::stoi(value);
    } else if (flag == "--seconds") {
      o.seconds = std::stod(value);
    } else if (flag == "--peaks") {
      if (std::sscanf(value.c_str(), "%lf,%lf,%lf", &o.peaks[0], &o.peaks[1], &o.peaks[2]) != 3)
        throw std::invalid_argument("--peaks takes three numbers: F32,BF16,INT8 (GFLOP/s)");
    } else {
      throw std::invalid_argument("unknown flag " + flag + " (flags: --threads N, --seconds S, --peaks F,B,I)");
    }
  }
  return o;
}

// Activations ~N(0, 1); weights uniform in +-1/sqrt(fan_in) as PyTorch initialises them.
Tensor normal_tensor(Shape shape, uint32_t seed) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(rng);
  return t;
}

std::vector<float> init_weights(size_t n, int64_t fan_in, uint32_t seed) {
  std::mt19937 rng(seed);
  const float bound = 1.f / std::sqrt(static_cast<float>(fan_in));
  std::uniform_real_distribution<float> dist(-bound, bound);
  std::vector<float> w(n);
  for (float& v : w) v = dist(rng);
  return w;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct Timing {
  double median_ms;
  double utilization;  // CPU seconds of this process per wall second: ~threads when nothing else runs
};

// Median milliseconds of f() over at least 5 calls filling `seconds`, after 2 warm-up calls.
Timing time_calls(const std::function<void()>& f, double seconds) {
  f();
  f();
  std::vector<double> times;
  const double start = now_seconds(), cpu_start = process_cpu_seconds();
  while (times.size() < 5 || (now_seconds() - start < seconds && times.size() < 1000)) {
    const double t0 = now_seconds();
    f();
    times.push_back((now_seconds() - t0) * 1e3);
  }
  const double utilization = (process_cpu_seconds() - cpu_start) / (now_seconds() - start);
  std::sort(times.begin(), times.end());
  return Timing{times[times.size() / 2], utilization};
}

double relative_l2(const Tensor& a, const Tensor& ref) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(a.data()[i]) - ref.data()[i];
    num += d * d;
    den += static_cast<double>(ref.data()[i]) * ref.data()[i];
  }
  return std::sqrt(num / den);
}

constexpr Precision kPrecisions[] = {Precision::FP32, Precision::BF16, Precision::INT8};

void print_row(const std::string& op, Precision p, const std::string& impl, Timing t, double macs, double err,
               const Options& o) {
  const double gflops = 2 * macs / (t.median_ms * 1e6);
  const double peak = o.peaks[static_cast<int>(p)];
  std::printf("%-24s %-5s %9.3f %8.0f %6.0f%% %9.1e %5.2f  %s\n", op.c_str(), lcmd::precision_name(p), t.median_ms,
              gflops, 100 * gflops / peak, err, t.utilization, impl.c_str());
}

void bench_conv(int channels, int size, const Options& o) {
  const std::string name = "conv3x3 " + std::to_string(channels) + "@" + std::to_string(size) + "x" + std::to_string(size);
  const int64_t fan_in = static_cast<int64_t>(channels) * 9;
  const std::vector<float> w = init_weights(static_cast<size_t>(channels) * fan_in, fan_in, 1);
  const std::vector<float> b = init_weights(channels, fan_in, 2);
  const Tensor x = normal_tensor({1, size, size, channels}, 3);
  const double macs = static_cast<double>(size) * size * channels * fan_in;
  Tensor reference;
  for (const Precision p : kPrecisions) {
    const lcmd::ops::Conv2d conv(w.data(), b.data(), channels, channels, 3, 1, 1, p);
    Tensor y;
    const Timing t = time_calls([&] { y = conv(x); }, o.seconds);
    if (p == Precision::FP32) reference = y;
    print_row(name, conv.precision(), conv.implementation(x.shape()), t, macs, relative_l2(y, reference), o);
  }
}

void bench_gemm(int rows, int in, int out, const Options& o) {
  const std::string name = "gemm " + std::to_string(rows) + "x" + std::to_string(in) + "x" + std::to_string(out);
  const std::vector<float> w = init_weights(static_cast<size_t>(out) * in, in, 4), b = init_weights(out, in, 5);
  const Tensor x = normal_tensor({rows, in}, 6);
  const double macs = static_cast<double>(rows) * in * out;
  Tensor reference;
  for (const Precision p : kPrecisions) {
    const lcmd::ops::Linear linear(w.data(), b.data(), in, out, p);
    Tensor y;
    const Timing t = time_calls([&] { y = linear(x); }, o.seconds);
    if (p == Precision::FP32) reference = y;
    print_row(name, linear.precision(), linear.implementation(rows), t, macs, relative_l2(y, reference), o);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    lcmd::ops::set_num_threads(o.threads);
    lcmd::ops::enable_flush_denormals();
    std::printf("threads %d; runnable: bf16 -> %s, int8 -> %s; peaks fp32 %.1f, bf16 %.1f, int8 %.1f GFLOP/s\n",
                lcmd::ops::num_threads(), lcmd::precision_name(lcmd::ops::runnable_precision(Precision::BF16)),
                lcmd::precision_name(lcmd::ops::runnable_precision(Precision::INT8)), o.peaks[0], o.peaks[1],
                o.peaks[2]);
    std::printf("%-24s %-5s %9s %8s %7s %9s %5s  %s\n", "op", "prec", "ms", "GFLOP/s", "%peak", "err", "util",
                "kernel");
    // UNet at a 32x32 latent (256x256 image), then the VAE decoder for a 256x256 image.
    for (const auto& [channels, size] : std::vector<std::pair<int, int>>{
             {320, 32}, {640, 16}, {1280, 8}, {512, 64}, {256, 128}, {128, 256}})
      bench_conv(channels, size, o);
    // Transformer GEMMs at 32x32 (rows x in x out): attention projections, GEGLU in and
    // out, the text embedding's cross-attention K/V.
    for (const auto& [rows, in, out] : std::vector<std::tuple<int, int, int>>{
             {1024, 320, 320}, {1024, 320, 2560}, {1024, 1280, 320}, {77, 768, 320}})
      bench_gemm(rows, in, out, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ops_bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
