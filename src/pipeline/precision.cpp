#include "pipeline/precision.h"

#include "core/error.h"
#include "ops/ops.h"

namespace lcmd {

namespace {

// bf16 is only worth it where the CPU has bf16 dot products (avx512_bf16 or AMX); elsewhere
// oneDNN would emulate it more slowly than fp32.
bool fast_bf16(const CpuInfo& cpu) { return cpu.avx512_bf16 || cpu.amx; }

}  // namespace

PipelinePrecision resolve_precision(const std::string& name, const CpuInfo& cpu) {
  PipelinePrecision p;  // fp32 everywhere
  if (name == "fp32") return p;
  if (name == "bf16" || ((name == "auto" || name.empty()) && fast_bf16(cpu))) {
    // The VAE decoder too, on bf16 Winograd (see models/vae.cpp): 1.02-1.09 s in the pipeline
    // against fp32 Winograd's 1.31-1.34 s at 256x256, image 53.6 dB PSNR from fp32's (bound 35).
    p.text_encoder = p.unet = p.vae = ops::runnable_precision(Precision::BF16);
    return p;
  }
  if (name == "int8") {
    p.text_encoder = fast_bf16(cpu) ? ops::runnable_precision(Precision::BF16) : Precision::FP32;
    p.unet = ops::runnable_precision(Precision::INT8);
    // The VAE decoder int8 too, its 3x3 convolutions as int8 Winograd (see models/vae.cpp): at
    // 256x256 it is 0.7-0.8 s against bf16 Winograd's ~1.05 s and keeps ~80 MiB less weights,
    // which keeps the mode's peak under 1.6 GB (1455 MiB). The image costs it ~9 dB: 43.8 / 43.3
    // dB PSNR against fp32 at 256 / 512 (bound 30), 52.5 with the bf16 VAE. int8 activations
    // are exposed to real weights' outliers; the default (bf16) mode is the one that keeps
    // fp32's range.
    p.vae = p.unet;
    return p;
  }
  if (name == "auto" || name.empty()) return p;
  throw InputError("precision '" + name + "' is not supported; allowed: auto, fp32, bf16, int8");
}

std::string describe_precision(const PipelinePrecision& p) {
  return std::string("text encoder ") + precision_name(p.text_encoder) + ", unet " + precision_name(p.unet) + ", vae " +
         precision_name(p.vae);
}

}  // namespace lcmd
