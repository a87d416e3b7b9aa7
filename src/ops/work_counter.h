// A process-wide count of the multiply-accumulates done by the compute-heavy ops (convolution,
// matrix product, attention), so benchmarks can report achieved GFLOP/s per stage.
#pragma once
#include <cstdint>

namespace lcmd::ops {

void count_macs(uint64_t n);
uint64_t macs_done();

}  // namespace lcmd::ops
