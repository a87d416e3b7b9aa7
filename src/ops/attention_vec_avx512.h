// Private to src/ops: the 16-lane AVX-512 vector type of the attention kernels (the interface
// is described in attention_flash_impl.h) and their tile shape, shared by attention_avx512.cpp
// and attention_avx512_bf16.cpp. x86-64 only; internal linkage like the kernels themselves.
#pragma once
#if defined(__x86_64__)
// GCC 12 reports the _mm512_undefined_ps() pass-through operand inside its own masked
// intrinsics (vmaxps, vscalefps, vroundscaleps) as "may be used uninitialized" (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "ops/attention_kernels.h"

#define LCMD_AVX512_TARGET "avx512f,avx512bw,avx512dq,avx512vl"
#define LCMD_AVX512_INLINE __attribute__((target(LCMD_AVX512_TARGET), always_inline)) inline

namespace lcmd::ops::detail {
namespace {

struct Vec512 {
  using T = __m512;
  static constexpr int kLanes = 16;

  LCMD_AVX512_INLINE static T zero() { return _mm512_setzero_ps(); }
  LCMD_AVX512_INLINE static T set1(float x) { return _mm512_set1_ps(x); }
  LCMD_AVX512_INLINE static T load(const float* p) { return _mm512_loadu_ps(p); }
  LCMD_AVX512_INLINE static void store(float* p, T x) { _mm512_storeu_ps(p, x); }
  LCMD_AVX512_INLINE static T broadcast(const float* p) { return _mm512_set1_ps(*p); }
  LCMD_AVX512_INLINE static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  LCMD_AVX512_INLINE static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  LCMD_AVX512_INLINE static T add(T a, T b) { return _mm512_add_ps(a, b); }
  LCMD_AVX512_INLINE static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  LCMD_AVX512_INLINE static T div(T a, T b) { return _mm512_div_ps(a, b); }
  // vmaxps returns its second operand when either is NaN: a NaN in b passes through.
  LCMD_AVX512_INLINE static T max(T a, T b) { return _mm512_max_ps(a, b); }

  LCMD_AVX512_INLINE static T round(T x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // p * 2^n for an integral n (vscalefps)
  LCMD_AVX512_INLINE static T scale_by_pow2(T p, T n) { return _mm512_scalef_ps(p, n); }

  LCMD_AVX512_INLINE static T fill_lanes_below(T x, int64_t limit, float fill) {
    if (limit <= 0) return x;
    return _mm512_mask_mov_ps(x, first_lanes(static_cast<int>(limit < 16 ? limit : 16)), _mm512_set1_ps(fill));
  }

  // r[i] <- column i of the 16 x 16 block whose rows are r[0..15].
  LCMD_AVX512_INLINE static void transpose16(T (&r)[16]) {
    T t[16];
    // Within 128-bit lanes: interleave row pairs, then gather 4 rows of one column.
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
      r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // Now lane L of r[4i + k] is column 4L + k of rows 4i..4i+3; move the lanes into place.
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 4; ++k) {
        t[8 * i + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0x88);
        t[8 * i + 4 + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0xdd);
      }
    for (int k = 0; k < 8; ++k) {
      r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
      r[k + 8] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
    }
  }

  LCMD_AVX512_INLINE static __mmask16 first_lanes(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
  }

  // dst[c * dst_stride + i] = src[i * stride + c] * scale for c < cols, i < 16 (0 past rows).
  LCMD_AVX512_INLINE static void transpose_in(const float* src, int64_t stride, int rows, int cols, float scale,
                                              float* dst, int64_t dst_stride) {
    T r[16];
    const __mmask16 columns = first_lanes(cols);
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(columns, src + i * stride) : zero();
    transpose16(r);
    const T s = set1(scale);
    for (int c = 0; c < cols; ++c) store(dst + c * dst_stride, mul(r[c], s));
  }

  // dst[i * stride + c] = src[c * src_stride + i] * lane_scale[i] for i < rows, c < cols.
  LCMD_AVX512_INLINE static void transpose_out(const float* src, int64_t src_stride, T lane_scale, float* dst,
                                               int64_t stride, int rows, int cols) {
    T r[16];
    for (int c = 0; c < 16; ++c) r[c] = c < cols ? mul(load(src + c * src_stride), lane_scale) : zero();
    transpose16(r);
    const __mmask16 columns = first_lanes(cols);
    for (int i = 0; i < rows; ++i) _mm512_mask_storeu_ps(dst + i * stride, columns, r[i]);
  }
};

// The tile shape for 32 registers (up to 24 accumulators): sub-tiles of 64 queries, score
// micro-tiles of 6 keys x 64 queries, P*V micro-tiles of 4..6 channels x 64 queries. On Zen 4
// 4-6 % faster at d = 40..160 than 12 keys x 32 queries or 8 keys x 48 queries, and as fast at
// d = 512 as 12 keys x 32 queries with 8-channel P*V tiles.
constexpr int kQueryVectors = 4, kKeyGroup = 6;
constexpr int kValueChunks[] = {6, 5, 4};

inline AttentionGeometry avx512_geometry(int64_t head_dim, bool bf16) {
  return make_geometry(Vec512::kLanes, kQueryVectors, kKeyGroup, pick_value_chunk(head_dim, kValueChunks), head_dim,
                       bf16);
}

}  // namespace
}  // namespace lcmd::ops::detail

#endif  // __x86_64__
