// Activations, GEGLU, nearest upsampling, additions and channel concatenation: memory-bound
// loops split over the threads, with the math of vec_math_impl.h so they vectorise.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "ops/ops.h"
#include "ops/parallel_impl.h"
#include "ops/vec_math_impl.h"

namespace lcmd::ops {

namespace {

LCMD_VECTOR_CLONES
void silu_kernel(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = detail::x_sigmoid(x[i], 1.f);
}

LCMD_VECTOR_CLONES
void quick_gelu_kernel(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = detail::x_sigmoid(x[i], 1.702f);
}

LCMD_VECTOR_CLONES
void gelu_erf_kernel(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = detail::gelu_erf(x[i]);
}

// out[f] = value[f] * gelu(gate[f]) for `rows` rows of 2F inputs (value half, gate half).
LCMD_VECTOR_CLONES
void geglu_rows(const float* x, float* out, int64_t rows, int64_t features) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* value = x + r * 2 * features;
    const float* gate = value + features;
    float* o = out + r * features;
#pragma omp simd
    for (int64_t f = 0; f < features; ++f) o[f] = value[f] * detail::gelu_erf(gate[f]);
  }
}

LCMD_VECTOR_CLONES
void add_kernel(const float* a, const float* b, float* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <class Kernel>
void apply_in_place(Tensor& x, Kernel kernel) {
  float* data = x.data();
  detail::parallel_range(x.numel(), detail::kElementwiseGrain,
                         [&](int64_t begin, int64_t end) { kernel(data + begin, end - begin); });
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* op) {
  if (a.shape() != b.shape())
    throw std::invalid_argument(std::string(op) + ": shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                                " differ");
}

void check_nhwc(const Tensor& x, const char* op) {
  if (x.rank() != 4) throw std::invalid_argument(std::string(op) + ": input " + shape_str(x.shape()) + " must be NHWC [N, H, W, C]");
}

}  // namespace

void silu_(Tensor& x) { apply_in_place(x, silu_kernel); }
void gelu_erf_(Tensor& x) { apply_in_place(x, gelu_erf_kernel); }
void quick_gelu_(Tensor& x) { apply_in_place(x, quick_gelu_kernel); }

Tensor geglu(const Tensor& x) {
  if (x.rank() < 1 || x.dim(-1) % 2 != 0)
    throw std::invalid_argument("geglu: input " + shape_str(x.shape()) + " needs an even last dimension (value and gate halves)");
  const int64_t features = x.dim(-1) / 2;
  Shape out_shape = x.shape();
  out_shape.back() = features;
  Tensor y(out_shape);
  if (features == 0) return y;
  const int64_t rows = x.numel() / (2 * features);
  detail::parallel_range(rows, std::max<int64_t>(1, detail::kElementwiseGrain / features), [&](int64_t begin, int64_t end) {
    geglu_rows(x.data() + begin * 2 * features, y.data() + begin * features, end - begin, features);
  });
  return y;
}

Tensor upsample_nearest2x(const Tensor& x) {
  check_nhwc(x, "upsample_nearest2x");
  const int64_t batch = x.dim(0), height = x.dim(1), width = x.dim(2), channels = x.dim(3);
  Tensor y({batch, 2 * height, 2 * width, channels});
  const size_t pixel_bytes = sizeof(float) * channels, out_row = 2 * width * channels;
  // One task per input row: it writes output rows 2h and 2h+1.
  detail::parallel_range(batch * height, std::max<int64_t>(1, detail::kElementwiseGrain / (4 * width * channels + 1)),
                         [&](int64_t begin, int64_t end) {
                           for (int64_t row = begin; row < end; ++row) {
                             const float* in = x.data() + row * width * channels;
                             float* out = y.data() + row * 2 * out_row;
                             for (int64_t w = 0; w < width; ++w) {
                               std::memcpy(out + 2 * w * channels, in + w * channels, pixel_bytes);
                               std::memcpy(out + (2 * w + 1) * channels, in + w * channels, pixel_bytes);
                             }
                             std::memcpy(out + out_row, out, sizeof(float) * out_row);
                           }
                         });
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  check_same_shape(a, b, "add");
  Tensor y(a.shape());
  detail::parallel_range(a.numel(), detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    add_kernel(a.data() + begin, b.data() + begin, y.data() + begin, end - begin);
  });
  return y;
}

void add_(Tensor& a, const Tensor& b) {
  check_same_shape(a, b, "add_");
  detail::parallel_range(a.numel(), detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    add_kernel(a.data() + begin, b.data() + begin, a.data() + begin, end - begin);
  });
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  check_nhwc(a, "concat_channels");
  check_nhwc(b, "concat_channels");
  if (a.dim(0) != b.dim(0) || a.dim(1) != b.dim(1) || a.dim(2) != b.dim(2))
    throw std::invalid_argument("concat_channels: " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                                " differ in N, H or W");
  const int64_t ca = a.dim(3), cb = b.dim(3), pixels = a.dim(0) * a.dim(1) * a.dim(2);
  Tensor y({a.dim(0), a.dim(1), a.dim(2), ca + cb});
  detail::parallel_range(pixels, std::max<int64_t>(1, detail::kElementwiseGrain / (ca + cb + 1)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float* out = y.data() + p * (ca + cb);
      std::memcpy(out, a.data() + p * ca, sizeof(float) * ca);
      std::memcpy(out + ca, b.data() + p * cb, sizeof(float) * cb);
    }
  });
  return y;
}

}  // namespace lcmd::ops
