// The flash-attention kernel for any CPU (see attention_flash_impl.h), on GCC's generic
// 4-lane vectors: SSE2 on a baseline x86-64, NEON on aarch64 (AWS Graviton). Tiles of 16
// queries, score micro-tiles of 4 keys x 16 queries, P*V micro-tiles of 4..5 channels.
#include <cstdint>
#include <cstring>

#define LCMD_ATTN_TARGET

namespace lcmd::ops::detail {
namespace {

struct VecPortable {
  typedef float T __attribute__((vector_size(16)));
  typedef int32_t Int __attribute__((vector_size(16)));
  static constexpr int kLanes = 4;

  static T zero() { return T{}; }
  static T set1(float x) { return T{x, x, x, x}; }
  static T load(const float* p) {
    T x;
    std::memcpy(&x, p, sizeof x);
    return x;
  }
  static void store(float* p, T x) { std::memcpy(p, &x, sizeof x); }
  static T broadcast(const float* p) { return set1(*p); }
  static T fmadd(T a, T b, T c) { return a * b + c; }
  static T mul(T a, T b) { return a * b; }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T div(T a, T b) { return a / b; }
  // b unless a > b (a NaN in b passes through, as with vmaxps)
  static T max(T a, T b) { return a > b ? a : b; }
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (|x| < 2^22).
  static T round(T x) { return (x + set1(12582912.f)) - set1(12582912.f); }
  // p * 2^n for an integral n in [-126, 127]: 2^n built from its exponent bits.
  static T scale_by_pow2(T p, T n) {
    const Int bits = (__builtin_convertvector(n, Int) + 127) << 23;
    T pow;
    std::memcpy(&pow, &bits, sizeof pow);
    return p * pow;
  }
  static T fill_lanes_below(T x, int64_t limit, float fill) {
    for (int i = 0; i < kLanes; ++i)
      if (i < limit) x[i] = fill;
    return x;
  }
  // dst[c * dst_stride + i] = src[i * stride + c] * scale for c < cols, i < kLanes (0 past rows).
  static void transpose_in(const float* src, int64_t stride, int rows, int cols, float scale, float* dst,
                           int64_t dst_stride) {
    for (int c = 0; c < cols; ++c)
      for (int i = 0; i < kLanes; ++i) dst[c * dst_stride + i] = i < rows ? src[i * stride + c] * scale : 0.f;
  }
  // dst[i * stride + c] = src[c * src_stride + i] * lane_scale[i] for i < rows, c < cols.
  static void transpose_out(const float* src, int64_t src_stride, T lane_scale, float* dst, int64_t stride, int rows,
                            int cols) {
    for (int i = 0; i < rows; ++i)
      for (int c = 0; c < cols; ++c) dst[i * stride + c] = src[c * src_stride + i] * lane_scale[i];
  }
};

}  // namespace
}  // namespace lcmd::ops::detail

#include "ops/attention_flash_impl.h"

namespace lcmd::ops::detail {
namespace {

constexpr int kQueryVectors = 4, kKeyGroup = 4;
constexpr int kValueChunks[] = {5, 4};

AttentionGeometry geometry(int64_t head_dim) {
  return make_geometry(VecPortable::kLanes, kQueryVectors, kKeyGroup, pick_value_chunk(head_dim, kValueChunks),
                       head_dim, /*bf16=*/false);
}

template <int RC>
using Tile = FlashTile<VecPortable, Fp32Arith<VecPortable>, kKeyGroup, kQueryVectors, RC>;

void run_tile(const AttentionGeometry& g, const HeadKV& kv, const QueryTile& tile, float* scratch) {
  if (g.value_chunk == 5) return Tile<5>::run(g, kv, tile, scratch);
  return Tile<4>::run(g, kv, tile, scratch);
}

}  // namespace

const AttentionKernel& portable_attention_kernel() {
  static const AttentionKernel kernel{"portable", false, geometry, run_tile, pack_fp32_head};
  return kernel;
}

}  // namespace lcmd::ops::detail
