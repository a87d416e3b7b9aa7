// Which precision each model computes in, from the user's choice and the CPU's features.
#pragma once
#include <string>

#include "core/cpu.h"
#include "pipeline/txt2img.h"

namespace lcmd {

// name: "fp32", "bf16", "int8", or "auto"/"" (the fastest mode that meets its accuracy bounds
// on this CPU). InputError names the allowed values.
PipelinePrecision resolve_precision(const std::string& name, const CpuInfo& cpu);
std::string describe_precision(const PipelinePrecision& p);

}  // namespace lcmd
