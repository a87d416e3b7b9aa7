#include "pipeline/precision.h"

#include "core/error.h"

namespace lcmd {

PipelinePrecision resolve_precision(const std::string& name, const CpuInfo& cpu) {
  PipelinePrecision p;
  if (name == "fp32" || name == "auto" || name.empty()) return p;
  throw InputError("precision '" + name + "' is not supported; allowed: fp32, auto");
}

std::string describe_precision(const PipelinePrecision& p) {
  return std::string("text encoder ") + precision_name(p.text_encoder) + ", unet " + precision_name(p.unet) + ", vae " +
         precision_name(p.vae);
}

}  // namespace lcmd
