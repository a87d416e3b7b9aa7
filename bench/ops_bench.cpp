// Conv2d / Linear throughput per precision on the Stable Diffusion 1.5 shapes (UNet at a 32x32
// latent, VAE decoder for a 256x256 image, the transformer GEMMs), against the machine's peak.
//
// Build (after `ninja -C build-prec lcmd_ops`), from the repository root:
//   g++ -O2 -std=c++20 -fopenmp -Isrc bench/ops_bench.cpp build-prec/liblcmd_ops.a build-prec/liblcmd_core.a -ldnnl -o build-prec/ops_bench
// Run: build-prec/ops_bench [--threads N] [--seconds S] [--peaks F32,BF16,INT8] [--only ops|banding]
//
// Each 3x3 shape is also timed as Winograd F(2x2, 3x3) in bf16 and int8
// (ops::Conv3x3Algorithm::kWinograd, the VAE decoder's convolutions), the last rows of its group.
// Each op is timed as the engine calls it (float32 NHWC in and out, so bf16 conversion, int8
// quantization and Winograd's layout changes are included), median over repetitions filling
// --seconds (default 0.5) after two warm-up calls. GFLOP/s counts 2 x the nominal multiply-adds
// (Winograd does fewer, hence its "% of peak" above 100). "err" is the relative L2 distance to
// the fp32 layer's output on the same input; "util" the CPU seconds this process used per wall
// second while timing (about the thread count when nothing else competes). A last table times
// the VAE decoder's large fp32 Winograd layers in one piece and in bands of output rows
// (conv_banding_impl.h), alternating the two so load from other processes hits both alike. The default peaks are the 2-thread fp32 FMA,
// vdpbf16ps and vpdpbusd rates measured on the 2-core Zen 4 development machine
// (../shared/notes/compute-probe.md); pass --peaks for another machine.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/conv_banding_impl.h"
#include "ops/ops.h"

namespace {

using lcmd::Precision;
using lcmd::Shape;
using lcmd::Tensor;

struct Options {
  int threads = 0;
  double seconds = 0.5;
  std::string only;  // "ops" or "banding": run just that part
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
    } else if (flag == "--only") {
      if (value != "ops" && value != "banding") throw std::invalid_argument("--only takes ops or banding");
      o.only = value;
    } else if (flag == "--peaks") {
      if (std::sscanf(value.c_str(), "%lf,%lf,%lf", &o.peaks[0], &o.peaks[1], &o.peaks[2]) != 3)
        throw std::invalid_argument("--peaks takes three numbers: F32,BF16,INT8 (GFLOP/s)");
    } else {
      throw std::invalid_argument("unknown flag " + flag + " (flags: --threads N, --seconds S, --peaks F,B,I, --only ops|banding)");
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
  // Winograd F(2x2, 3x3) in bf16 and int8, as the VAE decoder runs its convolutions
  // (ops::Conv3x3Algorithm).
  for (const Precision p : {Precision::BF16, Precision::INT8}) {
    const lcmd::ops::Conv2d winograd(w.data(), b.data(), channels, channels, 3, 1, 1, p,
                                     lcmd::ops::Conv3x3Algorithm::kWinograd);
    Tensor y;
    const Timing t = time_calls([&] { y = winograd(x); }, o.seconds);
    print_row(name, winograd.precision(), winograd.implementation(x.shape()), t, macs, relative_l2(y, reference), o);
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

// The same layer (fresh plans) in one piece and in the default bands: median ms of each, taking
// the lower of two alternating measurements.
void bench_banding(int cin, int cout, int size, const Options& o) {
  namespace detail = lcmd::ops::detail;
  const std::string name = "conv3x3 " + std::to_string(cin) + "->" + std::to_string(cout) + "@" +
                           std::to_string(size) + "x" + std::to_string(size);
  const int64_t fan_in = static_cast<int64_t>(cin) * 9;
  const std::vector<float> w = init_weights(static_cast<size_t>(cout) * fan_in, fan_in, 7);
  const std::vector<float> b = init_weights(cout, fan_in, 8);
  const Tensor x = normal_tensor({1, size, size, cin}, 9);
  const size_t default_budget = detail::winograd_band_budget();
  auto make_layer = [&](size_t budget) {
    detail::set_winograd_band_budget(budget);
    auto conv = std::make_unique<lcmd::ops::Conv2d>(w.data(), b.data(), cin, cout, 3, 1, 1);
    conv->implementation(x.shape());  // creates the plan under this budget
    detail::set_winograd_band_budget(default_budget);
    return conv;
  };
  const auto whole = make_layer(std::numeric_limits<size_t>::max()), banded = make_layer(default_budget);
  Tensor y_whole, y_banded;
  double whole_ms = 1e300, banded_ms = 1e300;
  for (int round = 0; round < 2; ++round) {
    whole_ms = std::min(whole_ms, time_calls([&] { y_whole = (*whole)(x); }, o.seconds).median_ms);
    banded_ms = std::min(banded_ms, time_calls([&] { y_banded = (*banded)(x); }, o.seconds).median_ms);
  }
  const size_t bands = detail::winograd_row_bands(1, size, size, cin, cout, default_budget).size();
  std::printf("%-26s %9.2f %9.2f %+7.1f%% %6zu %9.1e  %s\n", name.c_str(), whole_ms, banded_ms,
              100 * (banded_ms / whole_ms - 1), bands, relative_l2(y_banded, y_whole),
              banded->implementation(x.shape()).c_str());
}


void run_op_tables(const Options& o) {
  std::printf("%-24s %-5s %9s %8s %7s %9s %5s  %s\n", "op", "prec", "ms", "GFLOP/s", "%peak", "err", "util",
              "kernel");
  // UNet at a 32x32 latent (256x256 image), then the VAE decoder's widths at each of its sizes
  // for a 256x256 image.
  for (const auto& [channels, size] : std::vector<std::pair<int, int>>{
           {320, 32}, {640, 16}, {1280, 8}, {512, 32}, {512, 64}, {512, 128}, {256, 128}, {256, 256}, {128, 256}})
    bench_conv(channels, size, o);
  // Transformer GEMMs at 32x32 (rows x in x out): attention projections, GEGLU in and
  // out, the text embedding's cross-attention K/V.
  for (const auto& [rows, in, out] : std::vector<std::tuple<int, int, int>>{
           {1024, 320, 320}, {1024, 320, 2560}, {1024, 1280, 320}, {77, 768, 320}})
    bench_gemm(rows, in, out, o);
}

// The VAE decoder's large 3x3 layers for 256x256 and 512x512 images.
void run_banding_table(const Options& o) {
  std::printf("\n%-26s %9s %9s %8s %6s %9s  %s\n", "fp32 Winograd", "whole ms", "bands ms", "change", "bands",
              "err", "kernel");
  for (const auto& [cin, cout, size] : std::vector<std::tuple<int, int, int>>{
           {512, 512, 128}, {512, 256, 128}, {256, 256, 256}, {256, 128, 256}, {128, 128, 256},
           {512, 512, 256}, {512, 256, 256}, {256, 256, 512}, {128, 128, 512}})
    bench_banding(cin, cout, size, o);
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
    if (o.only != "banding") run_op_tables(o);
    if (o.only != "ops") run_banding_table(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ops_bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
