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
    // The VAE decoder int8 too (direct convolutions, the zero point folded into the bias): at
    // 256x256 it is ~0.9 s against bf16 Winograd's ~1.05 s and keeps 115 MiB less weights,
    // which brings the mode's peak under 1.6 GB (~1500 MiB against ~1560). The image costs it
    // ~6 dB: 46.3 / 45.5 dB PSNR against fp32 at 256 / 512 (bound 30), 52.5 with the bf16 VAE.
    // Per-tensor int8 is exposed to real weights' activation outliers; the default (bf16) mode
    // is the one that keeps fp32's range.
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
