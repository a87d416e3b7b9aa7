// Private to src/ops: the interface between attention.cpp (validation, K/V packing, threads)
// and the per-ISA flash-attention tile kernels (attention_avx512.cpp, attention_avx512_bf16.cpp,
// attention_avx2.cpp, attention_portable.cpp). Tests include it to run every kernel the CPU
// supports.
//
// The kernels put queries in the vector lanes: a task is one (batch, head, tile of queries),
// its queries are transposed to Q^T [d][queries] and its output accumulates as
// O^T [d][queries]. Scores S^T = K Q^T then come out one row of query lanes per key, so the
// running max and sum of the online softmax are plain lane-wise vector operations (no
// horizontal reductions), and a head dimension like 40 wastes no lanes.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace lcmd::ops::detail {

// How a kernel blocks its work and lays out K and V for one head dimension.
//
// Kernels read K and V as rows with a stride in 32-bit slots. fp32 kernels read floats:
// straight from the [B, S, H*d] tensors (stride H*d), or from a copy of one head (K [keys][d],
// V [keys][padded_dim] with zeros past d) when V needs padding or when K and V are packed once
// for many calls (PackedKV). bf16 kernels read packed pairs of bfloat16 (the low half of a
// slot is the first of the pair, as vdpbf16ps reads them): K pairs channels (2c, 2c+1),
// [keys][ceil(d/2)]; V pairs keys (2j, 2j+1), [ceil(keys/2)][padded_dim]. A missing partner
// is zero.
struct AttentionGeometry {
  int lanes = 0;           // queries per vector register
  int tile_queries = 0;    // queries per sub-tile: a multiple of lanes
  int block_keys = 0;      // keys per online-softmax step (even)
  int value_chunk = 0;     // output channels per P*V micro-tile
  int max_subtiles = 1;    // sub-tiles per task that keep a task's working set in L2
  int subtiles = 1;        // sub-tiles per task of this call (<= max_subtiles), set by the caller
  int64_t head_dim = 0;    // d
  int64_t padded_dim = 0;  // d rounded up to a multiple of value_chunk
  bool bf16 = false;

  int64_t key_slots(int64_t keys) const;    // 32-bit slots of one head's packed K
  int64_t value_slots(int64_t keys) const;  // 32-bit slots of one head's packed V
  int64_t scratch_floats() const;           // per-thread scratch of run_tile (for `subtiles`)
};

// The candidate chunk size (listed in decreasing order) that pads d the least, the largest
// one on ties.
template <int N>
inline int pick_value_chunk(int64_t head_dim, const int (&candidates)[N]) {
  int best = candidates[0];
  int64_t best_padded = -1;
  for (int c : candidates) {
    const int64_t padded = (head_dim + c - 1) / c * c;
    if (best_padded < 0 || padded < best_padded) best = c, best_padded = padded;
  }
  return best;
}

// Keys per online-softmax block: smaller blocks for a large d keep a block of K and V in L2.
inline int block_keys_for(int64_t head_dim) { return head_dim > 256 ? 48 : 96; }

// Sub-tiles per task: their Q^T and O^T (2 d kTile floats each) and one block of K and V
// should stay within about 640 KB of a 1 MB L2 cache.
inline int max_subtiles_for(int64_t head_dim, int tile_queries, int block_keys) {
  constexpr int64_t kBudgetBytes = 640 * 1024, kMaxSubtiles = 8;
  const int64_t per_subtile = 2 * head_dim * tile_queries * 4, kv_block = 2 * block_keys * head_dim * 4;
  return static_cast<int>(std::clamp<int64_t>((kBudgetBytes - kv_block) / per_subtile, 1, kMaxSubtiles));
}

// key_group: keys per score micro-tile (block_keys_for(d) must be a multiple).
inline AttentionGeometry make_geometry(int lanes, int query_vectors, int key_group, int value_chunk, int64_t head_dim,
                                       bool bf16) {
  AttentionGeometry g;
  g.lanes = lanes;
  g.tile_queries = lanes * query_vectors;
  const int block_keys = block_keys_for(head_dim) / key_group * key_group;
  g.block_keys = block_keys;
  g.value_chunk = value_chunk;
  g.head_dim = head_dim;
  g.padded_dim = (head_dim + value_chunk - 1) / value_chunk * value_chunk;
  g.max_subtiles = max_subtiles_for(head_dim, g.tile_queries, block_keys);
  g.subtiles = 1;
  g.bf16 = bf16;
  return g;
}

// One (batch, head) of K and V (layouts above); strides in 32-bit slots.
struct HeadKV {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_stride = 0;  // between key rows
  int64_t v_stride = 0;  // between value rows (bf16: rows of key pairs)
  int64_t keys = 0;
};

// The query rows of one task (up to subtiles * tile_queries) and where their output goes. q
// and out point at the task's first row, at the head's first channel; rows are `stride`
// floats apart.
struct QueryTile {
  const float* q = nullptr;
  float* out = nullptr;
  int64_t stride = 0;
  int64_t first = 0;  // sequence index of the task's first query (for the causal mask)
  int64_t rows = 0;
  bool causal = false;
};

struct AttentionKernel {
  const char* name;  // "avx512-bf16", "avx512", "avx2", "portable"
  bool bf16;         // rounds q, k, v and the softmax weights to bfloat16
  AttentionGeometry (*geometry)(int64_t head_dim);
  // softmax(q k^T / sqrt(d)) v for one tile; scratch holds geometry.scratch_floats() floats,
  // 64-byte aligned.
  void (*run_tile)(const AttentionGeometry& geometry, const HeadKV& kv, const QueryTile& tile, float* scratch);
  // One head's K and V (rows `stride` floats apart) into the packed layout: key_slots(keys)
  // slots at k_dst, value_slots(keys) at v_dst.
  void (*pack_head)(const AttentionGeometry& geometry, const float* k, const float* v, int64_t stride, int64_t keys,
                    void* k_dst, void* v_dst);
};

// pack_head of the fp32 kernels: row copies, V padded with zeros.
void pack_fp32_head(const AttentionGeometry& geometry, const float* k, const float* v, int64_t stride, int64_t keys,
                    void* k_dst, void* v_dst);

const AttentionKernel& portable_attention_kernel();
#if defined(__x86_64__)
const AttentionKernel& avx2_attention_kernel();
const AttentionKernel& avx512_attention_kernel();
const AttentionKernel& avx512_bf16_attention_kernel();
#endif

// The kernels this CPU can run, fastest first (fp32 and bf16 ones).
std::vector<const AttentionKernel*> runnable_attention_kernels();

// The fastest runnable kernel of the requested arithmetic; bf16 falls back to the fastest
// fp32 kernel on CPUs without AVX512_BF16.
const AttentionKernel& best_attention_kernel(bool bf16);

// attention() and PackedKV with a given kernel (tests run every runnable kernel through these).
// subtiles > 0 overrides the number of sub-tiles per task (clamped to the kernel's maximum).
Tensor attention_with(const AttentionKernel& kernel, const Tensor& q, const Tensor& k, const Tensor& v, int heads,
                      bool causal, int subtiles = 0);
PackedKV pack_kv_with(const AttentionKernel& kernel, const Tensor& k, const Tensor& v, int heads);

}  // namespace lcmd::ops::detail
