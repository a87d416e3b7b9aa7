// The full-size accuracy check of the fast precisions (issue 3), on the random-weight SD1.5 LCM
// model built from ../shared/sd15: for each precision and size, the UNet's relative L2 error
// against the fp32 UNet on identical inputs (three timesteps), and the PSNR of the whole
// pipeline's image against the fp32 engine's. Bounds: bf16 1e-2 and 35 dB, int8 3e-2 and 30 dB.
//
//   build/lcmd_precision_check [--like ../shared/sd15] [--tokenizer ../shared/golden/tokenizer]
//                              [--precisions bf16,int8] [--sizes 256,512]
// Exit code 0 when every bound holds, 1 otherwise. Needs ~12 GB of memory.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "cli/flags.h"
#include "core/cpu.h"
#include "ops/ops.h"
#include "pipeline/precision.h"
#include "pipeline/random_model.h"
#include "pipeline/txt2img.h"
#include "sched/embeddings.h"
#include "sched/torch_rng.h"

using namespace lcmd;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
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

double psnr(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  double se = 0;
  for (size_t i = 0; i < a.size(); ++i) se += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return se == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 * a.size() / se);
}

std::unique_ptr<Txt2ImgPipeline> random_pipeline(const std::filesystem::path& like, const std::filesystem::path& tok,
                                                 const PipelinePrecision& precision) {
  const auto text = ClipTextConfig::from_json(read_json_file(like / "text_encoder/config.json"), "text");
  const auto unet = UNetConfig::from_json(read_json_file(like / "unet/config.json"), "unet");
  const auto vae = VaeConfig::from_json(read_json_file(like / "vae/config.json"), "vae");
  const auto sched = LcmSchedulerConfig::from_file(like / "scheduler/scheduler_config.json");
  const RandomSource t(kRandomTextEncoderSeed), u(kRandomUNetSeed), v(kRandomVaeSeed);
  return std::make_unique<Txt2ImgPipeline>(ClipTokenizer::from_dir(tok), text, t, unet, u, vae, v, sched, precision);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    // Flags skips argv[0..1]; this tool has no sub-command, so shift by one.
    std::vector<char*> args(argv, argv + argc);
    args.insert(args.begin() + 1, const_cast<char*>("check"));
    const Flags f(static_cast<int>(args.size()), args.data(), {"like", "tokenizer", "precisions", "sizes"}, {});
    const std::filesystem::path like = f.str("like", "../shared/sd15");
    const std::filesystem::path tok = f.str("tokenizer", "../shared/golden/tokenizer");
    ops::set_num_threads(0);
    ops::enable_flush_denormals();
    const auto reference = random_pipeline(like, tok, {});
    bool ok = true;
    for (const std::string& name : split(f.str("precisions", "bf16,int8"))) {
      const PipelinePrecision precision = resolve_precision(name, cpu_info());
      const double max_err = name == "int8" ? 3e-2 : 1e-2, min_psnr = name == "int8" ? 30 : 35;
      const auto fast = random_pipeline(like, tok, precision);
      std::printf("%s (%s)\n", name.c_str(), describe_precision(precision).c_str());
      for (const std::string& size_text : split(f.str("sizes", "256,512"))) {
        GenerateRequest req;
        req.prompt = "a photo of an astronaut riding a horse on mars";
        req.width = req.height = std::stoi(size_text);
        PipelineTrace trace;
        const GenerateResult a = reference->run(req, 7, {}, &trace);
        const GenerateResult b = fast->run(req, 7);
        // The UNet alone, on the fp32 run's inputs.
        const UNetContext ref_ctx = reference->unet().prepare_context(trace.prompt_embeds);
        const UNetContext fast_ctx = fast->unet().prepare_context(trace.prompt_embeds);
        const auto w = guidance_scale_embedding(req.guidance_scale, *reference->unet().config().time_cond_proj_dim);
        const Tensor cond = Tensor::from({1, static_cast<int64_t>(w.size())}, w.data());
        double worst = 0;
        for (size_t i = 0; i < trace.timesteps.size() && i < 3; ++i) {
          const Tensor x = to_nhwc(i == 0 ? trace.latents_init : trace.latents[i - 1]);
          const Tensor r = reference->unet().forward(x, trace.timesteps[i], ref_ctx, &cond);
          const Tensor o = fast->unet().forward(x, trace.timesteps[i], fast_ctx, &cond);
          worst = std::max(worst, rel_l2(o, r));
        }
        const double db = psnr(b.rgb, a.rgb);
        const bool pass = worst <= max_err && db >= min_psnr;
        ok &= pass;
        std::printf("  %dx%d: unet rel L2 %.3g (bound %.0e), image PSNR %.2f dB (bound %.0f)  %s\n", req.width,
                    req.height, worst, max_err, db, min_psnr, pass ? "ok" : "FAIL");
        std::fflush(stdout);
      }
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lcmd_precision_check: error: %s\n", e.what());
    return 2;
  }
}
