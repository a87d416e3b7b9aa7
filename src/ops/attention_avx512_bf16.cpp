// The bf16 flash-attention kernel for AVX512_BF16 CPUs (see attention_flash_impl.h): the tiles
// of the fp32 AVX-512 kernel, with both products on vdpbf16ps, which multiplies pairs of
// bfloat16 and accumulates in fp32 at twice the fp32 FMA rate. Q^T and K pair up channels
// (2c, 2c+1), the softmax weights P and V pair up keys (2j, 2j+1). Scores, the online softmax
// and the output stay fp32; only the inputs of the two products are rounded, and the weights
// come from a degree-3 exp2 (7.5e-5 relative, far below their bf16 rounding).
#if defined(__x86_64__)
#include "ops/attention_vec_avx512.h"

#define LCMD_ATTN_TARGET __attribute__((target(LCMD_AVX512_TARGET ",avx512bf16")))
#include "ops/attention_flash_impl.h"

namespace lcmd::ops::detail {
namespace {

// vcvtne2ps2bf16 puts one source in each half of the register; this interleaves the halves
// so that slot i holds element i of both.
LCMD_ATTN_TARGET __m512i interleave_halves(__m512i halves) {
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                         5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(order, halves);
}

// A mask of the first n lanes (none for n <= 0).
__mmask16 first_lanes(int64_t n) { return n >= 16 ? 0xffff : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1); }

struct Bf16Arith {
  using T = __m512;
  using Slot = uint32_t;  // two bf16
  static constexpr int kLanes = 16, kExpDegree = 3;

  static int64_t query_slots(int64_t head_dim) { return (head_dim + 1) / 2; }

  // rows[2 j2] and rows[2 j2 + 1] (fp32, kTile lanes each) -> pair row j2: slot i holds
  // (rows[2 j2][i], rows[2 j2 + 1][i]); a missing odd row counts as zeros. out may be rows
  // itself: pair row j2 is written after the rows it overwrites were read.
  template <int kTile>
  LCMD_ATTN_TARGET static void to_pairs(const float* rows, int64_t count, uint32_t* out) {
    for (int64_t j2 = 0; j2 < (count + 1) / 2; ++j2) {
      const float* first = rows + 2 * j2 * kTile;
      const bool has_second = 2 * j2 + 1 < count;
      __m512i packed[kTile / kLanes];
#pragma GCC unroll 8
      for (int n = 0; n < kTile / kLanes; ++n) {
        const __m512 a = _mm512_loadu_ps(first + n * kLanes);
        const __m512 b = has_second ? _mm512_loadu_ps(first + kTile + n * kLanes) : _mm512_setzero_ps();
        packed[n] = interleave_halves((__m512i)_mm512_cvtne2ps_pbh(b, a));
      }
#pragma GCC unroll 8
      for (int n = 0; n < kTile / kLanes; ++n) _mm512_storeu_si512(out + j2 * kTile + n * kLanes, packed[n]);
    }
  }

  // Q^T as pairs of channels: slot [c2][i] = (q[i][2 c2], q[i][2 c2 + 1]) * scale, via the
  // fp32 transpose in the same buffer (it has room for d * kTile floats).
  template <int kTile>
  LCMD_ATTN_TARGET static void pack_queries(const float* q, int64_t stride, int64_t rows, int64_t head_dim, float scale,
                                            uint32_t* qt) {
    float* fp32 = reinterpret_cast<float*>(qt);
    transpose_queries<Vec512, kTile>(q, stride, rows, head_dim, scale, fp32);
    to_pairs<kTile>(fp32, head_dim, qt);
  }

  static const uint32_t* keys_at(const HeadKV& kv, int64_t first_key) {
    return static_cast<const uint32_t*>(kv.k) + first_key * kv.k_stride;
  }

  // acc[r][n] += sum_c K[r][c] Q^T[c][n-th vector of queries] over the channel pairs of
  // [c_begin, c_end) (c_begin even), for `valid` <= R key rows (the others repeat the last row).
  template <int R, int NQ>
  LCMD_ATTN_TARGET static void scores(const uint32_t* k, int64_t k_stride, int valid, int64_t c_begin, int64_t c_end,
                                      const uint32_t* qt, T (&acc)[R][NQ]) {
    constexpr int kTile = NQ * kLanes;
    const uint32_t* rows[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) rows[r] = k + std::min(r, valid - 1) * k_stride;
    for (int64_t c2 = c_begin / 2; c2 < (c_end + 1) / 2; ++c2) {
      __m512i qv[NQ];
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) qv[n] = _mm512_loadu_si512(qt + c2 * kTile + n * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512i kb = _mm512_set1_epi32(static_cast<int>(rows[r][c2]));
#pragma GCC unroll 8
        for (int n = 0; n < NQ; ++n) acc[r][n] = _mm512_dpbf16_ps(acc[r][n], (__m512bh)kb, (__m512bh)qv[n]);
      }
    }
  }

  // The softmax weights P (fp32 rows) as pairs of keys.
  template <int NQ>
  LCMD_ATTN_TARGET static const uint32_t* weights(const float* p, int64_t keys, uint32_t* pairs) {
    to_pairs<NQ * kLanes>(p, keys, pairs);
    return pairs;
  }

  static const uint32_t* values_at(const HeadKV& kv, int64_t first_key) {
    return static_cast<const uint32_t*>(kv.v) + first_key / 2 * kv.v_stride;  // first_key is even
  }

  // acc[r][n] += sum_j V[j][r] P[j][n-th vector of queries], over key pairs
  template <int RC, int NQ>
  LCMD_ATTN_TARGET static void values(const uint32_t* v, int64_t v_stride, const uint32_t* p, int64_t keys,
                                      T (&acc)[RC][NQ]) {
    constexpr int kTile = NQ * kLanes;
    for (int64_t j2 = 0; j2 < (keys + 1) / 2; ++j2) {
      __m512i pv[NQ];
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) pv[n] = _mm512_loadu_si512(p + j2 * kTile + n * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < RC; ++r) {
        const __m512i vb = _mm512_set1_epi32(static_cast<int>(v[j2 * v_stride + r]));
#pragma GCC unroll 8
        for (int n = 0; n < NQ; ++n) acc[r][n] = _mm512_dpbf16_ps(acc[r][n], (__m512bh)vb, (__m512bh)pv[n]);
      }
    }
  }
};

// K rows -> rows of channel pairs [keys][ceil(d/2)]; V rows -> rows of key pairs
// [ceil(keys/2)][padded_dim]. Rounding to nearest even, as everywhere in the bf16 kernel.
LCMD_ATTN_TARGET void pack_head(const AttentionGeometry& g, const float* k, const float* v, int64_t stride,
                                int64_t keys, void* k_dst, void* v_dst) {
  const int64_t d = g.head_dim, pairs = (d + 1) / 2, dp = g.padded_dim;
  uint32_t* k_out = static_cast<uint32_t*>(k_dst);
  for (int64_t j = 0; j < keys; ++j)
    for (int64_t c = 0; c < d; c += 32) {  // 32 channels -> 16 pairs, in order
      const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(d - c), k + j * stride + c);
      const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(d - c - 16), k + j * stride + c + 16);
      _mm512_mask_storeu_epi32(k_out + j * pairs + c / 2, first_lanes(pairs - c / 2),
                               (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  uint32_t* v_out = static_cast<uint32_t*>(v_dst);
  for (int64_t j2 = 0; j2 < (keys + 1) / 2; ++j2) {
    const float* first = v + 2 * j2 * stride;
    const bool has_second = 2 * j2 + 1 < keys;
    for (int64_t c = 0; c < dp; c += 16) {
      const __m512 a = _mm512_maskz_loadu_ps(first_lanes(d - c), first + c);
      const __m512 b = has_second ? _mm512_maskz_loadu_ps(first_lanes(d - c), first + stride + c) : _mm512_setzero_ps();
      _mm512_mask_storeu_epi32(v_out + j2 * dp + c, first_lanes(dp - c),
                               interleave_halves((__m512i)_mm512_cvtne2ps_pbh(b, a)));
    }
  }
}

AttentionGeometry geometry(int64_t head_dim) { return avx512_geometry(head_dim, /*bf16=*/true); }

template <int RC>
using Tile = FlashTile<Vec512, Bf16Arith, kKeyGroup, kQueryVectors, RC>;

void run_tile(const AttentionGeometry& g, const HeadKV& kv, const QueryTile& tile, float* scratch) {
  switch (g.value_chunk) {
    case 6: return Tile<6>::run(g, kv, tile, scratch);
    case 5: return Tile<5>::run(g, kv, tile, scratch);
    default: return Tile<4>::run(g, kv, tile, scratch);
  }
}

}  // namespace

const AttentionKernel& avx512_bf16_attention_kernel() {
  static const AttentionKernel kernel{"avx512-bf16", true, geometry, run_tile, pack_head};
  return kernel;
}

}  // namespace lcmd::ops::detail
#endif  // __x86_64__
