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
    const bool bf16_runs = p.text_encoder == Precision::BF16;
    // The VAE decoder as in the bf16 mode: its bf16 Winograd convolutions are as fast as int8
    // direct ones (985 against 990 ms at 256x256), keep fp32's range where per-tensor int8
    // would meet real weights' activation outliers, and cost ~80 MiB more at the peak. A CPU
    // with VNNI but no bf16 runs it int8 (0.89 s against fp32 Winograd's 1.27 s).
    p.vae = bf16_runs ? Precision::BF16 : ops::runnable_precision(Precision::INT8);
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
