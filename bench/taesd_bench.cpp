// TAESD decode cost at full size: madebyollin/taesd's config (every stage 64 wide) with random
// weights, ms per decode of one latent (default 32x32 -> a 256x256 image) at each precision,
// and, with --vae, the SD1.5 KL VAE decoder on the same latent for comparison.
//
// Build: `ninja -C build lcmd_taesd_bench` (a CMake target).
// Run: build/lcmd_taesd_bench [--latent HxW] [--threads N] [--seconds S] [--precisions fp32,bf16,int8] [--vae]
//
// Each decode is timed as the pipeline calls it (NHWC float32 in and out), median over
// repetitions filling --seconds (at least 3) after one warm-up decode that creates the kernels.
// GMAC counts the convolutions' nominal multiply-adds. "err" is the relative L2 distance of the
// output to the fp32 decoder's on the same latent. A precision this CPU lacks runs as fp32 (see
// ops::runnable_precision) and is printed as what it ran.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/taesd.h"
#include "models/vae.h"
#include "ops/ops.h"

namespace {

using namespace lcmd;

struct Options {
  int latent_h = 32, latent_w = 32;
  int threads = 0;
  double seconds = 3.0;
  std::vector<Precision> precisions{Precision::FP32, Precision::BF16, Precision::INT8};
  bool vae = false;
};

std::vector<Precision> parse_precisions(const std::string& list) {
  std::vector<Precision> out;
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ',')) {
    Precision p;
    if (!parse_precision(name, &p)) throw std::invalid_argument("unknown precision '" + name + "' (fp32, bf16, int8)");
    out.push_back(p);
  }
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--vae") {
      o.vae = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--latent") {
      if (std::sscanf(value.c_str(), "%dx%d", &o.latent_h, &o.latent_w) != 2 || o.latent_h < 1 || o.latent_w < 1)
        throw std::invalid_argument("--latent takes HxW, e.g. 32x32");
    } else if (flag == "--threads") {
      o.threads = std::stoi(value);
    } else if (flag == "--seconds") {
      o.seconds = std::stod(value);
    } else if (flag == "--precisions") {
      o.precisions = parse_precisions(value);
    } else {
      throw std::invalid_argument("unknown flag " + flag +
                                  " (flags: --latent HxW, --threads N, --seconds S, --precisions LIST, --vae)");
    }
  }
  return o;
}

// Latents like the pipeline's final `denoised`: normal, times 4 (as the golden TAESD cases).
Tensor random_latents(int h, int w) {
  Tensor t({1, h, w, 4});
  std::mt19937 rng(400);
  std::normal_distribution<float> normal(0.f, 4.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(rng);
  return t;
}

// Nominal multiply-adds of the TAESD decoder's 3x3 convolutions for an h x w latent.
double taesd_gmac(const TaesdConfig& c, int h, int w) {
  const double width = c.channels(), k = 9;
  double pixels = double(h) * w, macs = pixels * c.latent_channels * width * k;  // layers.0
  const size_t stages = c.num_decoder_blocks.size();
  for (size_t s = 0; s < stages; ++s) {
    macs += pixels * c.num_decoder_blocks[s] * 3 * width * width * k;
    if (s + 1 < stages) pixels *= 4;  // nearest x2 before the stage's conv
    macs += pixels * width * (s + 1 < stages ? width : c.out_channels) * k;
  }
  return macs * 1e-9;
}

template <class Decoder>
double median_ms(const Decoder& decoder, const Tensor& latents, double seconds, Tensor* out) {
  *out = decoder.forward(latents);  // warm-up: creates the convolution primitives
  std::vector<double> ms;
  const auto start = std::chrono::steady_clock::now();
  while (ms.size() < 3 || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    const Tensor y = decoder.forward(latents);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double rel_l2(const Tensor& a, const Tensor& ref) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double d = double(a.data()[i]) - ref.data()[i];
    num += d * d;
    den += double(ref.data()[i]) * ref.data()[i];
  }
  return std::sqrt(num / den);
}

// SD1.5's AutoencoderKL decoder (widths 128, 256, 512, 512), random weights.
VaeConfig sd15_vae_config() {
  VaeConfig c;
  c.block_out_channels = {128, 256, 512, 512};
  c.down_block_types.assign(4, "DownEncoderBlock2D");
  c.up_block_types.assign(4, "UpDecoderBlock2D");
  return c;
}

int run(const Options& o) {
  ops::set_num_threads(o.threads);
  ops::enable_flush_denormals();
  const TaesdConfig config;  // madebyollin/taesd: widths 64, blocks 3,3,3,1
  const Tensor latents = random_latents(o.latent_h, o.latent_w);
  const double gmac = taesd_gmac(config, o.latent_h, o.latent_w);
  std::printf("TAESD decoder (width %d, random weights), latent %dx%d -> image %dx%d, %d threads, %.2f GMAC\n",
              config.channels(), o.latent_h, o.latent_w, 8 * o.latent_h, 8 * o.latent_w, ops::num_threads(), gmac);
  std::printf("%-22s %10s %10s %10s\n", "model / precision", "ms", "GFLOP/s", "err");
  const RandomSource weights(1);
  Tensor fp32_out;
  for (Precision requested : o.precisions) {
    const Precision p = ops::runnable_precision(requested);
    const TaesdDecoder decoder(config, Weights(weights, p));
    Tensor out;
    const double ms = median_ms(decoder, latents, o.seconds, &out);
    if (p == Precision::FP32 && fp32_out.empty()) fp32_out = out;
    const std::string err = fp32_out.empty() ? "-" : std::to_string(rel_l2(out, fp32_out));
    std::printf("%-22s %10.1f %10.1f %10s\n", (std::string("taesd ") + precision_name(p)).c_str(), ms,
                2 * gmac / (ms * 1e-3), err.c_str());
  }
  if (o.vae) {
    const RandomSource vae_weights(2);
    for (Precision requested : o.precisions) {
      const Precision p = ops::runnable_precision(requested);
      const VaeDecoder vae(sd15_vae_config(), Weights(vae_weights, p));
      Tensor out;
      const double ms = median_ms(vae, latents, o.seconds, &out);
      std::printf("%-22s %10.1f %10s %10s\n", (std::string("sd15 kl-vae ") + precision_name(p)).c_str(), ms, "-", "-");
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "taesd_bench: %s\n", e.what());
    return 2;
  }
}
