// The fp32 flash-attention kernel for AVX2 + FMA CPUs (see attention_flash_impl.h): tiles of
// 16 queries (two 8-lane vectors), score micro-tiles of 6 keys x 16 queries and P*V
// micro-tiles of 4..6 output channels x 16 queries, i.e. 12 accumulators of the 16 registers.
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#define LCMD_ATTN_TARGET __attribute__((target("avx2,fma")))
#define LCMD_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace lcmd::ops::detail {
namespace {

struct Vec256 {
  using T = __m256;
  static constexpr int kLanes = 8;

  LCMD_AVX2_INLINE static T zero() { return _mm256_setzero_ps(); }
  LCMD_AVX2_INLINE static T set1(float x) { return _mm256_set1_ps(x); }
  LCMD_AVX2_INLINE static T load(const float* p) { return _mm256_loadu_ps(p); }
  LCMD_AVX2_INLINE static void store(float* p, T x) { _mm256_storeu_ps(p, x); }
  LCMD_AVX2_INLINE static T broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  LCMD_AVX2_INLINE static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  LCMD_AVX2_INLINE static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  LCMD_AVX2_INLINE static T add(T a, T b) { return _mm256_add_ps(a, b); }
  LCMD_AVX2_INLINE static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  LCMD_AVX2_INLINE static T div(T a, T b) { return _mm256_div_ps(a, b); }
  // vmaxps returns its second operand when either is NaN: a NaN in b passes through.
  LCMD_AVX2_INLINE static T max(T a, T b) { return _mm256_max_ps(a, b); }
  LCMD_AVX2_INLINE static T round(T x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // p * 2^n for an integral n in [-126, 127]: 2^n built from its exponent bits.
  LCMD_AVX2_INLINE static T scale_by_pow2(T p, T n) {
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  }
  LCMD_AVX2_INLINE static T fill_lanes_below(T x, int64_t limit, float fill) {
    if (limit <= 0) return x;
    const T lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    const T below = _mm256_cmp_ps(lane, _mm256_set1_ps(static_cast<float>(limit < 8 ? limit : 8)), _CMP_LT_OQ);
    return _mm256_blendv_ps(x, _mm256_set1_ps(fill), below);
  }

  // r[i] <- column i of the 8 x 8 block whose rows are r[0..7].
  LCMD_AVX2_INLINE static void transpose8(T (&r)[8]) {
    T t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // Lane L of u[4i + k] is column 4L + k of rows 4i..4i+3.
    for (int k = 0; k < 4; ++k) {
      r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
      r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
    }
  }

  LCMD_AVX2_INLINE static __m256i first_lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  // dst[c * dst_stride + i] = src[i * stride + c] * scale for c < cols, i < 8 (0 past rows).
  LCMD_AVX2_INLINE static void transpose_in(const float* src, int64_t stride, int rows, int cols, float scale,
                                            float* dst, int64_t dst_stride) {
    T r[8];
    const __m256i columns = first_lanes(cols);
    for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_maskload_ps(src + i * stride, columns) : zero();
    transpose8(r);
    const T s = set1(scale);
    for (int c = 0; c < cols; ++c) store(dst + c * dst_stride, mul(r[c], s));
  }

  // dst[i * stride + c] = src[c * src_stride + i] * lane_scale[i] for i < rows, c < cols.
  LCMD_AVX2_INLINE static void transpose_out(const float* src, int64_t src_stride, T lane_scale, float* dst,
                                             int64_t stride, int rows, int cols) {
    T r[8];
    for (int c = 0; c < 8; ++c) r[c] = c < cols ? mul(load(src + c * src_stride), lane_scale) : zero();
    transpose8(r);
    const __m256i columns = first_lanes(cols);
    for (int i = 0; i < rows; ++i) _mm256_maskstore_ps(dst + i * stride, columns, r[i]);
  }
};

}  // namespace
}  // namespace lcmd::ops::detail

#include "ops/attention_flash_impl.h"

namespace lcmd::ops::detail {
namespace {

constexpr int kQueryVectors = 2, kKeyGroup = 6;
constexpr int kValueChunks[] = {6, 5, 4};

AttentionGeometry geometry(int64_t head_dim) {
  return make_geometry(Vec256::kLanes, kQueryVectors, kKeyGroup, pick_value_chunk(head_dim, kValueChunks), head_dim,
                       /*bf16=*/false);
}

template <int RC>
using Tile = FlashTile<Vec256, Fp32Arith<Vec256>, kKeyGroup, kQueryVectors, RC>;

void run_tile(const AttentionGeometry& g, const HeadKV& kv, const QueryTile& tile, float* scratch) {
  switch (g.value_chunk) {
    case 6:
      return Tile<6>::run(g, kv, tile, scratch);
    case 5:
      return Tile<5>::run(g, kv, tile, scratch);
    default:
      return Tile<4>::run(g, kv, tile, scratch);
  }
}

}  // namespace

const AttentionKernel& avx2_attention_kernel() {
  static const AttentionKernel kernel{"avx2", false, geometry, run_tile, pack_fp32_head};
  return kernel;
}

}  // namespace lcmd::ops::detail
#endif  // __x86_64__
