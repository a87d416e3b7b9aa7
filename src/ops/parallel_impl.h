// Private to src/ops: how the hand-written kernels split work over OpenMP threads, and the
// attribute that compiles a hot loop for AVX-512, AVX2 and baseline x86-64 (picked at load
// time through an ifunc, so the binary still runs on any x86-64; on other architectures, such
// as aarch64, the loop is compiled once for the build's target).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "ops/ops.h"

// GCC clones the function per target and its resolver picks the best one for the CPU. OpenMP
// parallel regions must stay outside such functions: GCC outlines them before cloning, so
// the outlined body would only get the baseline code. Loops inside use `#pragma omp simd`,
// which vectorises them at any -O level.
#if defined(__x86_64__)
#define LCMD_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LCMD_VECTOR_CLONES
#endif

namespace lcmd::ops::detail {

// How many threads to give n items of work: all of them, unless that leaves fewer than
// min_per_thread items each (waking a thread costs more than a few thousand floats of work).
inline int threads_for(int64_t n, int64_t min_per_thread) {
  const int64_t useful = std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread));
  return static_cast<int>(std::min<int64_t>(num_threads(), useful));
}

// Calls f(slice, begin, end) for `slices` contiguous, nearly equal parts of [0, n), each on
// its own thread (a plain call when slices == 1). f must not throw.
template <class F>
void parallel_slices(int64_t n, int slices, F&& f) {
  if (n <= 0) return;
  if (slices <= 1) {
    f(0, int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(slices)
  {
    // The team may be smaller than asked for (nested region, thread limit): cover every slice.
    for (int s = omp_get_thread_num(); s < slices; s += omp_get_num_threads()) {
      const int64_t begin = n * s / slices, end = n * (s + 1) / slices;
      if (begin < end) f(s, begin, end);
    }
  }
}

// Calls f(begin, end) on contiguous slices of [0, n), one per thread (see threads_for).
template <class F>
void parallel_range(int64_t n, int64_t min_per_thread, F&& f) {
  parallel_slices(n, threads_for(n, min_per_thread), [&](int, int64_t begin, int64_t end) { f(begin, end); });
}

// Elements per thread below which an elementwise op is not worth splitting.
constexpr int64_t kElementwiseGrain = 16384;

}  // namespace lcmd::ops::detail
