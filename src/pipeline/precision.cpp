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
    // The VAE decoder too, on bf16 Winograd (see models/vae.cpp): XX s against fp32 Winograd's
    // 1.27 s at 256x256.
    p.text_encoder = p.unet = p.vae = ops::runnable_precision(Precision::BF16);
    return p;
  }
  if (name == "int8") {
    p.text_encoder = fast_bf16(cpu) ? ops::runnable_precision(Precision::BF16) : Precision::FP32;
    // The VAE decoder too: int8 direct convolutions take 0.89 s where fp32 Winograd takes 1.27 s
    // (256x256); the int8 mode's image is then 42.5 dB PSNR from fp32's on the full-size random
    // model (46.5 dB with the fp32 VAE; bound 30 dB).
    // Not in the default mode: real VAE weights may have the activation outliers per-tensor int8
    // handles worst, and the default must not depend on that.
    p.unet = p.vae = ops::runnable_precision(Precision::INT8);
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
