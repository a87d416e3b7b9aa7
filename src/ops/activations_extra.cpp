// ReLU for TAESD (AutoencoderTiny): a memory-bound loop split over the threads like the other
// activations in elementwise.cpp.
#include "ops/ops.h"
#include "ops/parallel_impl.h"

namespace lcmd::ops {

namespace {

// torch.relu keeps NaN as NaN: only values below zero become 0.
LCMD_VECTOR_CLONES
void relu_kernel(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] < 0.f ? 0.f : x[i];
}

}  // namespace

void relu_(Tensor& x) {
  float* data = x.data();
  detail::parallel_range(x.numel(), detail::kElementwiseGrain,
                         [&](int64_t begin, int64_t end) { relu_kernel(data + begin, end - begin); });
}

}  // namespace lcmd::ops
