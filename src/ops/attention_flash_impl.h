// Private to src/ops: the flash-attention tile kernel, written once over a vector type and
// compiled once per instruction set. Each attention_<isa>.cpp defines LCMD_ATTN_TARGET (the
// target attribute of its functions, e.g. __attribute__((target("avx2,fma")))) and then includes
// this file; everything here has internal linkage, so the AVX-512 and AVX2 instances can never be
// merged by the linker into code a CPU cannot run.
//
// A vector type V provides (all static, inline):
//   T, kLanes; zero(), set1(f), load(p), store(p, x), broadcast(p) = set1(*p);
//   fmadd(a, b, c) = a*b + c, mul, add, sub, max(a, b) (NaN in b passes), div;
//   round(x) to the nearest integer, scale_by_pow2(p, n) = p * 2^n for integral n;
//   fill_lanes_below(x, limit, f): lanes with index < limit become f;
//   transpose_in(src, stride, rows, cols, scale, dst, dst_stride): one kLanes x kLanes block,
//       dst[c * dst_stride + i] = src[i * stride + c] * scale (i < rows, else 0), c < cols;
//   transpose_out(src, src_stride, lane_scale, dst, stride, rows, cols): the way back,
//       dst[i * stride + c] = src[c * src_stride + i] * lane_scale[i] for i < rows, c < cols.
// An arithmetic A (Fp32Arith below, or the AVX512-BF16 one) provides the two inner products —
// the S^T = K Q^T micro-tile and the O^T += V^T P micro-tile — and how Q, K, V, P are stored.
//
// A task is up to `subtiles` sub-tiles of kTile queries of one head. It runs the online softmax
// over blocks of Nk keys; each block of K and V is used by all sub-tiles before the next one is
// read, so K and V stream from memory once per task instead of once per sub-tile. Per sub-tile:
//   S^T = K_block Q^T * (log2(e) / sqrt d)     (Q^T pre-scaled, so exp(s / sqrt d) = 2^S)
//   m' = max(m, max_j S^T[j]),  alpha = 2^(m - m'),  P = 2^(S^T - m'),  l = l alpha + sum_j P
//   O^T = O^T alpha + V_block^T P
// and at the end O^T / l goes transposed into the output rows.
#pragma once

#ifndef LCMD_ATTN_TARGET
#error "define LCMD_ATTN_TARGET before including ops/attention_flash_impl.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ops/attention_kernels.h"

namespace lcmd::ops::detail {
namespace {

// 2^f on [-1/2, 1/2], coefficients fitted for relative error. Degree 6: 1.9e-9 in exact
// arithmetic, 1.3 ulp evaluated in float; degree 3: 7.5e-5, for weights that are rounded to
// bfloat16 (2^-9) anyway.
constexpr float kExp2Deg6[] = {
    1.f, 0.693147182f, 0.240226462f, 0.0555032864f, 0.00961848907f, 0.00133999425f, 0.000153457833f};
constexpr float kExp2Deg3[] = {0.999928117f, 0.693261087f, 0.242610306f, 0.0551704429f};
// Smallest exponent pow2 evaluates: keeps every result a normal float.
constexpr float kExp2Floor = -125.f;

// 2^x for x <= 0 with a polynomial of the given degree (6 or 3). Inputs below -125 count as
// -125, so no result is denormal (2^-125 next to a row maximum's 1 is far below float
// resolution); NaN stays NaN.
template <class V, int Degree>
LCMD_ATTN_TARGET inline typename V::T pow2(typename V::T x) {
  static_assert(Degree == 6 || Degree == 3);
  const float* c = Degree == 6 ? kExp2Deg6 : kExp2Deg3;
  x = V::max(V::set1(kExp2Floor), x);
  const typename V::T n = V::round(x), f = V::sub(x, n);  // |f| <= 1/2
  typename V::T p = V::set1(c[Degree]);
#pragma GCC unroll 8
  for (int i = Degree - 1; i >= 0; --i) p = V::fmadd(p, f, V::set1(c[i]));
  return V::scale_by_pow2(p, n);
}

// log2(e) / sqrt(d): Q is multiplied by it, so scores come out in base-2 exponent units.
inline float score_scale(int64_t head_dim) {
  return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim)));
}

// Channels per pass of the score micro-kernel for kTile queries: the pass's 16 KB of Q^T rows
// stay in the 32 KB L1 cache (even, for channel pairs).
template <int kTile>
constexpr int64_t kScoreChunk = 4096 / kTile / 2 * 2;

// Q^T [d][kTile] of one sub-tile (rows <= kTile queries), scaled; missing rows are zeros.
template <class V, int kTile>
LCMD_ATTN_TARGET void transpose_queries(const float* q, int64_t stride, int64_t rows, int64_t head_dim, float scale,
                                        float* qt) {
  constexpr int L = V::kLanes;
  for (int i0 = 0; i0 < kTile; i0 += L) {
    const int block_rows = static_cast<int>(std::clamp<int64_t>(rows - i0, 0, L));
    for (int64_t c0 = 0; c0 < head_dim; c0 += L)
      V::transpose_in(q + i0 * stride + c0, stride, block_rows, static_cast<int>(std::min<int64_t>(L, head_dim - c0)),
                      scale, qt + c0 * kTile + i0, kTile);
  }
}

// ---- fp32 arithmetic: Q^T, K rows and V rows are floats ----
// K and V are rows of `stride` floats: the q/k/v tensors themselves (stride H*d) or a copy of
// one head (attention.cpp decides).

template <class V>
struct Fp32Arith {
  using T = typename V::T;
  using Slot = float;
  static constexpr int kLanes = V::kLanes, kExpDegree = 6;

  static int64_t query_slots(int64_t head_dim) { return head_dim; }

  template <int kTile>
  LCMD_ATTN_TARGET static void pack_queries(const float* q, int64_t stride, int64_t rows, int64_t head_dim, float scale,
                                            float* qt) {
    transpose_queries<V, kTile>(q, stride, rows, head_dim, scale, qt);
  }

  static const float* keys_at(const HeadKV& kv, int64_t first_key) {
    return static_cast<const float*>(kv.k) + first_key * kv.k_stride;
  }

  // acc[r][n] += sum_c K[r][c] Q^T[c][n-th vector of queries] over channels [c_begin, c_end),
  // for `valid` <= R key rows (the others repeat the last row: nothing is read past the keys).
  template <int R, int NQ>
  LCMD_ATTN_TARGET static void scores(const float* k, int64_t k_stride, int valid, int64_t c_begin, int64_t c_end,
                                      const float* qt, T (&acc)[R][NQ]) {
    constexpr int kTile = NQ * kLanes;
    const float* rows[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) rows[r] = k + std::min(r, valid - 1) * k_stride;
    for (int64_t c = c_begin; c < c_end; ++c) {
      T qv[NQ];
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) qv[n] = V::load(qt + c * kTile + n * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const T kb = V::broadcast(rows[r] + c);
#pragma GCC unroll 8
        for (int n = 0; n < NQ; ++n) acc[r][n] = V::fmadd(kb, qv[n], acc[r][n]);
      }
    }
  }

  // The softmax weights as the value product reads them: the fp32 rows themselves.
  template <int NQ>
  LCMD_ATTN_TARGET static const float* weights(const float* p, int64_t /*keys*/, float* /*pair_buffer*/) {
    return p;
  }

  static const float* values_at(const HeadKV& kv, int64_t first_key) {
    return static_cast<const float*>(kv.v) + first_key * kv.v_stride;
  }

  // acc[r][n] += sum_j V[j][r] P[j][n-th vector of queries], over `keys` keys
  template <int RC, int NQ>
  LCMD_ATTN_TARGET static void values(const float* v, int64_t v_stride, const float* p, int64_t keys,
                                      T (&acc)[RC][NQ]) {
    constexpr int kTile = NQ * kLanes;
    for (int64_t j = 0; j < keys; ++j) {
      T pv[NQ];
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) pv[n] = V::load(p + j * kTile + n * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < RC; ++r) {
        const T vb = V::broadcast(v + j * v_stride + r);
#pragma GCC unroll 8
        for (int n = 0; n < NQ; ++n) acc[r][n] = V::fmadd(vb, pv[n], acc[r][n]);
      }
    }
  }
};

// ---- the tile driver ----

template <class V, class A, int R, int NQ, int RC>
struct FlashTile {
  using T = typename V::T;
  using Slot = typename A::Slot;
  static constexpr int kLanes = V::kLanes, kTile = NQ * kLanes;

  // The per-sub-tile state in scratch: Q^T, O^T, running max m and sum l (kTile lanes each).
  struct Subtile {
    Slot* qt;
    float* ot;
    float* m;
    float* l;
  };

  static int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }

  static Subtile subtile(const AttentionGeometry& g, float* scratch, int s) {
    const int64_t qt_floats = round_up16(g.head_dim * kTile);  // as in AttentionGeometry::scratch_floats
    float* base = scratch + s * (qt_floats + g.padded_dim * kTile + 2 * kTile);
    float* ot = base + qt_floats;
    float* m = ot + g.padded_dim * kTile;
    return {reinterpret_cast<Slot*>(base), ot, m, m + kTile};
  }

  // Scores of `keys` (<= R) keys over channels [c_begin, c_end) added to s (rows of kTile;
  // the first pass starts from 0). The last pass masks the causal future to -inf and takes
  // the lane-wise maximum into block_max.
  LCMD_ATTN_TARGET static void score_group(const Slot* k, int64_t k_stride, int keys, int64_t c_begin, int64_t c_end,
                                           bool first_pass, bool last_pass, const Slot* qt, bool masked,
                                           int64_t mask_limit, float* s, T (&block_max)[NQ]) {
    T acc[R][NQ];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n)
        acc[r][n] = first_pass || r >= keys ? V::zero() : V::load(s + r * kTile + n * kLanes);
    A::template scores<R, NQ>(k, k_stride, keys, c_begin, c_end, qt, acc);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (r >= keys) break;
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) {
        T x = acc[r][n];
        if (last_pass) {
          // Query lane i of the sub-tile sees key j only if its index first + i >= j.
          if (masked) x = V::fill_lanes_below(x, mask_limit + r - n * kLanes, -INFINITY);
          block_max[n] = V::max(block_max[n], x);
        }
        V::store(s + r * kTile + n * kLanes, x);
      }
    }
  }

  // s <- 2^(s - m) in place (masked keys exactly 0); l += the row sums.
  LCMD_ATTN_TARGET static void exponentiate(float* s, int64_t keys, const T (&m)[NQ], T (&l)[NQ], bool masked,
                                            int64_t mask_limit) {
    for (int64_t j = 0; j < keys; ++j) {
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) {
        float* row = s + j * kTile + n * kLanes;
        T p = pow2<V, A::kExpDegree>(V::sub(V::load(row), m[n]));
        if (masked) p = V::fill_lanes_below(p, mask_limit + j - n * kLanes, 0.f);
        l[n] = V::add(l[n], p);
        V::store(row, p);
      }
    }
  }

  // O^T[c0 .. c0+RC) = O^T alpha + V^T P for one block of keys.
  LCMD_ATTN_TARGET static void accumulate_output(const Slot* v, int64_t v_stride, const Slot* p, int64_t keys,
                                                 float* ot, const T (&alpha)[NQ]) {
    T acc[RC][NQ];
#pragma GCC unroll 16
    for (int r = 0; r < RC; ++r)
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) acc[r][n] = V::mul(V::load(ot + r * kTile + n * kLanes), alpha[n]);
    A::template values<RC, NQ>(v, v_stride, p, keys, acc);
#pragma GCC unroll 16
    for (int r = 0; r < RC; ++r)
#pragma GCC unroll 8
      for (int n = 0; n < NQ; ++n) V::store(ot + r * kTile + n * kLanes, acc[r][n]);
  }

  // One block of keys [j0, j0 + keys) for one sub-tile whose first query is `first`.
  LCMD_ATTN_TARGET static void attend_block(const AttentionGeometry& g, const HeadKV& kv, const Subtile& st, int64_t j0,
                                            int64_t keys, bool causal, int64_t first, float* s, Slot* pairs) {
    const int64_t d = g.head_dim;
    const bool masked = causal && j0 + keys - 1 > first;
    const int64_t mask_limit = j0 - first;  // key j0 + r hides the lanes below mask_limit + r

    T block_max[NQ];
#pragma GCC unroll 8
    for (int n = 0; n < NQ; ++n) block_max[n] = V::set1(-INFINITY);
    for (int64_t c0 = 0; c0 < d; c0 += kScoreChunk<kTile>) {
      const int64_t c1 = std::min(d, c0 + kScoreChunk<kTile>);
      for (int64_t r0 = 0; r0 < keys; r0 += R)
        score_group(A::keys_at(kv, j0 + r0), kv.k_stride, static_cast<int>(std::min<int64_t>(R, keys - r0)), c0, c1,
                    c0 == 0, c1 == d, st.qt, masked, mask_limit + r0, s + r0 * kTile, block_max);
    }

    T m[NQ], l[NQ], alpha[NQ];
#pragma GCC unroll 8
    for (int n = 0; n < NQ; ++n) {
      const T m_old = V::load(st.m + n * kLanes);
      m[n] = V::max(m_old, block_max[n]);
      alpha[n] = pow2<V, A::kExpDegree>(V::sub(m_old, m[n]));  // 2^-125 ~ 0 on the first block (m_old = -inf)
      l[n] = V::mul(V::load(st.l + n * kLanes), alpha[n]);
    }
    exponentiate(s, keys, m, l, masked, mask_limit);
#pragma GCC unroll 8
    for (int n = 0; n < NQ; ++n) V::store(st.m + n * kLanes, m[n]), V::store(st.l + n * kLanes, l[n]);

    const Slot* p = A::template weights<NQ>(s, keys, pairs);
    const Slot* v = A::values_at(kv, j0);
    for (int64_t c0 = 0; c0 < g.padded_dim; c0 += RC)
      accumulate_output(v + c0, kv.v_stride, p, keys, st.ot + c0 * kTile, alpha);
  }

  // out rows <- (O^T / l)^T
  LCMD_ATTN_TARGET static void store_output(const Subtile& st, int64_t head_dim, float* out, int64_t stride,
                                            int64_t rows) {
    for (int i0 = 0; i0 < kTile && i0 < rows; i0 += kLanes) {
      const T inv_l = V::div(V::set1(1.f), V::load(st.l + i0));
      const int block_rows = static_cast<int>(std::min<int64_t>(kLanes, rows - i0));
      for (int64_t c0 = 0; c0 < head_dim; c0 += kLanes)
        V::transpose_out(st.ot + c0 * kTile + i0, kTile, inv_l, out + i0 * stride + c0, stride, block_rows,
                         static_cast<int>(std::min<int64_t>(kLanes, head_dim - c0)));
    }
  }

  LCMD_ATTN_TARGET static void run(const AttentionGeometry& g, const HeadKV& kv, const QueryTile& tile,
                                   float* scratch) {
    const int64_t d = g.head_dim, block_keys = g.block_keys;
    const int subtiles = static_cast<int>((tile.rows + kTile - 1) / kTile);
    float* s = scratch + subtiles_floats(g, g.subtiles);
    Slot* pairs = reinterpret_cast<Slot*>(s + block_keys * kTile);
    const float scale = score_scale(d);

    for (int t = 0; t < subtiles; ++t) {
      const Subtile st = subtile(g, scratch, t);
      const int64_t rows = std::min<int64_t>(kTile, tile.rows - t * kTile);
      A::template pack_queries<kTile>(tile.q + t * kTile * tile.stride, tile.stride, rows, d, scale, st.qt);
      for (int64_t i = 0; i < g.padded_dim * kTile; i += kLanes) V::store(st.ot + i, V::zero());
      for (int i = 0; i < kTile; i += kLanes) V::store(st.m + i, V::set1(-INFINITY)), V::store(st.l + i, V::zero());
    }
    // Causal: a sub-tile's last query sees keys up to its own index.
    auto key_end = [&](int t) {
      return tile.causal ? std::min(kv.keys, tile.first + std::min<int64_t>(tile.rows, (t + 1) * kTile)) : kv.keys;
    };
    const int64_t tile_key_end = key_end(subtiles - 1);
    for (int64_t j0 = 0; j0 < tile_key_end; j0 += block_keys)
      for (int t = 0; t < subtiles; ++t) {
        const int64_t end = std::min(j0 + block_keys, key_end(t));
        if (end > j0)
          attend_block(g, kv, subtile(g, scratch, t), j0, end - j0, tile.causal, tile.first + t * kTile, s, pairs);
      }
    for (int t = 0; t < subtiles; ++t)
      store_output(subtile(g, scratch, t), d, tile.out + t * kTile * tile.stride, tile.stride,
                   std::min<int64_t>(kTile, tile.rows - t * kTile));
  }

  static int64_t subtiles_floats(const AttentionGeometry& g, int subtiles) {
    return subtiles * (round_up16(g.head_dim * kTile) + g.padded_dim * kTile + 2 * kTile);
  }
};

}  // namespace
}  // namespace lcmd::ops::detail
