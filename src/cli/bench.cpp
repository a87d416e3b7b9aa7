// `lcmd bench`: end-to-end speed of prompt -> PNG with the model loaded, per stage, with achieved
// GFLOP/s against the machine's measured fp32 peak, peak RSS and model ready time.
#include "cli/bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "cli/cold_bench.h"
#include "cli/flags.h"
#include "core/cpu.h"
#include "core/error.h"
#include "lcmd/engine.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lcmd {

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

#if defined(__x86_64__)
// 12 independent FMA chains per thread: enough to cover the FMA latency on every x86 core.
__attribute__((target("avx512f"))) double fma_loop_avx512(long iters) {
  __m512 acc[12];
  for (auto& a : acc) a = _mm512_set1_ps(1.0f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i)
    for (auto& a : acc) a = _mm512_fmadd_ps(a, m, c);
  float sink = 0;
  for (auto& a : acc) sink += _mm512_reduce_add_ps(a);
  return 2.0 * 16 * 12 * iters + (sink == 12345.0f);
}

__attribute__((target("avx2,fma"))) double fma_loop_avx2(long iters) {
  __m256 acc[12];
  for (auto& a : acc) a = _mm256_set1_ps(1.0f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i)
    for (auto& a : acc) a = _mm256_fmadd_ps(a, m, c);
  alignas(32) float out[8];
  float sink = 0;
  for (auto& a : acc) {
    _mm256_store_ps(out, a);
    sink += out[0];
  }
  return 2.0 * 8 * 12 * iters + (sink == 12345.0f);
}
#endif

// The machine's fp32 FMA peak on `threads` threads, measured for ~0.3 s (0 when unknown).
double measure_fp32_peak_gflops(int threads) {
#if defined(__x86_64__)
  const CpuInfo& cpu = cpu_info();
  if (!cpu.avx2) return 0;
  const long iters = 20'000'000;
  double flops = 0;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
  flops += cpu.avx512f ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return flops / s * 1e-9;
#else
  (void)threads;
  return 0;
#endif
}

struct RunSummary {
  int width, height, steps;
  double total_ms, tokenize_ms, text_encoder_ms, unet_step_ms, vae_decode_ms, png_ms;
  std::vector<double> unet_steps_ms;  // median of each step over the repeats
  double text_encoder_gmac, unet_step_gmac, vae_decode_gmac;
  double peak_rss_mb;
};

RunSummary run_size(const Engine& engine, int width, int height, int steps, double guidance, int repeat, int warmup) {
  GenerateRequest req;
  req.prompt = "a photo of an astronaut riding a horse on mars, highly detailed";
  req.width = width;
  req.height = height;
  req.steps = steps;
  req.guidance_scale = guidance;
  req.seed = 0;
  for (int i = 0; i < warmup; ++i) engine.generate(req);  // creates kernels for these shapes
  std::vector<StageTimings> runs;
  for (int i = 0; i < repeat; ++i) {
    req.prompt += " ";  // a new prompt each time: the text-embedding cache must not hide the encoder
    runs.push_back(engine.generate(req).timings);
  }
  auto med = [&](auto get) {
    std::vector<double> v;
    for (const auto& t : runs) v.push_back(get(t));
    return median(v);
  };
  RunSummary s{};
  s.width = width;
  s.height = height;
  s.steps = steps;
  s.total_ms = med([](const StageTimings& t) { return t.total_ms; });
  s.tokenize_ms = med([](const StageTimings& t) { return t.tokenize_ms; });
  s.text_encoder_ms = med([](const StageTimings& t) { return t.text_encoder_ms; });
  s.vae_decode_ms = med([](const StageTimings& t) { return t.vae_decode_ms; });
  s.png_ms = med([](const StageTimings& t) { return t.png_ms; });
  std::vector<double> all_steps;
  for (int k = 0; k < steps; ++k) s.unet_steps_ms.push_back(med([k](const StageTimings& t) { return t.unet_step_ms[k]; }));
  for (const auto& t : runs) all_steps.insert(all_steps.end(), t.unet_step_ms.begin(), t.unet_step_ms.end());
  s.unet_step_ms = median(all_steps);
  s.text_encoder_gmac = runs.back().text_encoder_gmac;
  s.unet_step_gmac = runs.back().unet_step_gmac;
  s.vae_decode_gmac = runs.back().vae_decode_gmac;
  s.peak_rss_mb = peak_rss_mb();
  return s;
}

std::vector<int> parse_sizes(const std::string& text) {
  std::vector<int> sizes;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end || v <= 0 || v % 8 || v > kMaxImageSide)
      throw InputError("--sizes must be a comma-separated list of positive multiples of 8 up to " +
                       std::to_string(kMaxImageSide) + ", got '" + text + "'");
    sizes.push_back(static_cast<int>(v));
  }
  if (sizes.empty()) throw InputError("--sizes is empty");
  return sizes;
}

void print_table(const RunSummary& s, double peak) {
  auto gflops = [](double gmac, double ms) { return ms > 0 ? 2 * gmac / (ms * 1e-3) : 0.0; };
  auto row = [&](const char* name, double ms, double gmac) {
    if (gmac > 0) {
      const double g = gflops(gmac, ms);
      std::printf("  %-14s %9.1f ms %9.1f GMAC %8.1f GFLOP/s", name, ms, gmac, g);
      if (peak > 0) std::printf(" %6.1f %% of fp32 peak", 100 * g / peak);
      std::printf("\n");
    } else {
      std::printf("  %-14s %9.1f ms\n", name, ms);
    }
  };
  std::printf("%dx%d, %d steps (medians)\n", s.width, s.height, s.steps);
  row("tokenize", s.tokenize_ms, 0);
  row("text encoder", s.text_encoder_ms, s.text_encoder_gmac);
  row("unet step", s.unet_step_ms, s.unet_step_gmac);
  for (size_t k = 0; k < s.unet_steps_ms.size(); ++k)
    std::printf("    step %zu       %9.1f ms\n", k + 1, s.unet_steps_ms[k]);
  row("vae decode", s.vae_decode_ms, s.vae_decode_gmac);
  row("png", s.png_ms, 0);
  row("total", s.total_ms, 0);
  // ru_maxrss is in KiB: MiB here and in the JSON's peak_rss_mb, decimal GB beside it.
  std::printf("  %-14s %9.0f MiB (%.2f GB)\n", "peak RSS", s.peak_rss_mb, s.peak_rss_mb * 1048576.0 / 1e9);
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  const Flags f(argc, argv, {"model", "like", "tokenizer", "sizes", "steps", "precision", "repeat", "warmup", "threads",
                             "guidance", "decoder", "taesd"},
                {"random", "json", "cold"});
  if (f.has("model") == f.has("random")) throw InputError("give exactly one of --model DIR and --random");
  if (f.has("cold")) {
    if (!f.has("model")) throw InputError("--cold measures a model's files: give --model DIR|FILE");
    return run_cold_bench(f.str("model"), f.str("precision", "auto"), static_cast<int>(f.integer("repeat", 3, 1, 100)),
                          f.has("json"));
  }
  const std::vector<int> sizes = parse_sizes(f.str("sizes", "256"));
  const int steps = static_cast<int>(f.integer("steps", 4, 1, kMaxSteps));
  const int repeat = static_cast<int>(f.integer("repeat", 5, 1, 1000));
  const int warmup = static_cast<int>(f.integer("warmup", 1, 0, 100));
  const double guidance = f.number("guidance", 8.0);
  EngineOptions options;
  options.threads = static_cast<int>(f.integer("threads", 0, 0, 1024));
  options.precision = f.str("precision", "auto");
  options.default_decoder = f.str("decoder", "vae");
  options.taesd_dir = f.str("taesd");  // with --random and --decoder taesd: a random full-size TAESD
  if (options.default_decoder != "vae" && options.default_decoder != "taesd")
    throw InputError("--decoder must be vae or taesd, got '" + options.default_decoder + "'");
  if (options.default_decoder == "taesd" && options.taesd_dir.empty() && !f.has("random"))
    throw InputError("--decoder taesd with --model needs --taesd DIR");

  const auto t0 = Clock::now();
  std::unique_ptr<Engine> engine;
  std::string model_desc;
  if (f.has("random")) {
    const std::filesystem::path like = f.str("like", "../shared/sd15");
    std::filesystem::path tokenizer = f.str("tokenizer", "");
    if (tokenizer.empty())
      tokenizer = std::filesystem::exists(like / "tokenizer/vocab.json") ? like / "tokenizer" : like / "../golden/tokenizer";
    engine = Engine::load_random(like, tokenizer, options);
    model_desc = "random weights, configs of " + like.string();
  } else {
    engine = Engine::load(f.str("model"), options);
    model_desc = f.str("model");
  }
  const double ready_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  const int threads = engine->threads();
  const double peak = measure_fp32_peak_gflops(threads);
  const CpuInfo& cpu = cpu_info();

  std::vector<RunSummary> runs;
  for (int size : sizes) {
    runs.push_back(run_size(*engine, size, size, steps, guidance, repeat, warmup));
    if (!f.has("json")) {
      if (runs.size() == 1)
        std::printf("lcmd bench: %s\n  cpu %s, %d threads (%s), fp32 peak %.1f GFLOP/s\n  precision: %s\n"
                    "  decoder %s; model ready in %.0f ms; %d timed runs after %d warm-up\n",
                    model_desc.c_str(), cpu.model.c_str(), threads, cpu.features().c_str(), peak,
                    engine->precision().c_str(), options.default_decoder.c_str(), ready_ms, repeat, warmup);
      print_table(runs.back(), peak);
      std::fflush(stdout);
    }
  }
  if (f.has("json")) {
    nlohmann::json out;
    out["machine"] = {{"cpu", cpu.model},        {"arch", cpu.arch},
                      {"threads", threads},      {"features", cpu.features()},
                      {"fp32_peak_gflops", peak}};
    out["model"] = model_desc;
    for (const RunSummary& s : runs) {
      out["runs"].push_back({{"width", s.width},
                             {"height", s.height},
                             {"steps", s.steps},
                             {"precision", options.precision},
                             {"precision_detail", engine->precision()},
                             {"decoder", options.default_decoder},
                             {"threads", threads},
                             {"repeat", repeat},
                             {"total_ms", s.total_ms},
                             {"stages_ms",
                              {{"tokenize", s.tokenize_ms},
                               {"text_encoder", s.text_encoder_ms},
                               {"unet_step", s.unet_step_ms},
                               {"unet_steps", s.unet_steps_ms},
                               {"vae_decode", s.vae_decode_ms},
                               {"png", s.png_ms}}},
                             {"gmac",
                              {{"text_encoder", s.text_encoder_gmac},
                               {"unet_step", s.unet_step_gmac},
                               {"vae_decode", s.vae_decode_gmac}}},
                             {"peak_rss_mb", s.peak_rss_mb},
                             {"ready_ms", ready_ms}});
    }
    std::cout << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace lcmd
