// Private to src/ops: the interface between attention.cpp (validation, K/V packing, threads)
// and the per-ISA flash-attention tile kernels (attention_avx512.cpp, attention_avx2.cpp,
// attention_portable.cpp). Tests include it to run every kernel the CPU supports.
//
// The kernels put queries in the vector lanes: a task is one (batch, head, tile of Mq
// queries), its queries are transposed to Q^T [d][Mq] and its output accumulates as
// O^T [dp][Mq]. Scores S^T = K Q^T then come out as rows of Mq lanes, one row per key, so the
// running max and sum of the online softmax are plain lane-wise vector operations (no
// horizontal reductions), and a head dimension like 40 wastes no lanes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lcmd::ops::detail {

// How a kernel blocks its work and lays out packed K and V for one head dimension.
//
// Packed K of one head: groups of key_group keys, each group [d][key_group] (the key_group
// keys' values of channel c are adjacent, so the score micro-kernel broadcasts them from one
// cache line); keys past the end of the sequence are zeros.
// Packed V of one head: [keys][padded_dim], channels past d are zeros.
// bf16 kernels store pairs of bfloat16 in each 32-bit slot (the low half is the first of the
// pair, as vdpbf16ps reads them): K pairs channels (2c, 2c+1) -> groups [ceil(d/2)][key_group];
// V pairs keys (2j, 2j+1) -> [ceil(keys/2)][padded_dim]. A missing partner is zero.
struct AttentionGeometry {
  int lanes = 0;         // queries per vector register
  int tile_queries = 0;  // Mq, queries per task: a multiple of lanes
  int key_group = 0;     // R, keys per score micro-tile
  int block_keys = 0;    // Nk, keys per online-softmax step: a multiple of key_group (even)
  int value_chunk = 0;   // Rc, output channels per P*V micro-tile
  int64_t head_dim = 0;  // d
  int64_t padded_dim = 0;  // d rounded up to a multiple of value_chunk
  bool bf16 = false;

  int64_t key_slots(int64_t keys) const;    // 32-bit slots of one head's packed K
  int64_t value_slots(int64_t keys) const;  // 32-bit slots of one head's packed V
  int64_t scratch_floats() const;           // per-thread scratch of run_tile
};

// One (batch, head) of packed K and V (layouts above).
struct HeadKV {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t keys = 0;
};

// The query rows of one task and where their output goes. q and out point at the tile's
// first row, at the head's first channel; rows are `stride` floats apart.
struct QueryTile {
  const float* q = nullptr;
  float* out = nullptr;
  int64_t stride = 0;
  int64_t first = 0;  // sequence index of the tile's first query (for the causal mask)
  int64_t rows = 0;   // 1..tile_queries
  bool causal = false;
};

struct AttentionKernel {
  const char* name;  // "avx512-bf16", "avx512", "avx2", "portable"
  bool bf16;         // rounds q, k, v and the softmax weights to bfloat16
  AttentionGeometry (*geometry)(int64_t head_dim);
  // softmax(q k^T / sqrt(d)) v for one tile; scratch holds geometry.scratch_floats() floats,
  // 64-byte aligned.
  void (*run_tile)(const AttentionGeometry& geometry, const HeadKV& kv, const QueryTile& tile, float* scratch);
};

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

// The bf16 rounding of vdpbf16ps / vcvtneps2bf16 (round to nearest even; NaN stays NaN).
inline uint16_t round_to_bf16(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// Two bf16 values in one 32-bit slot, `first` in the low half.
inline uint32_t bf16_pair(float first, float second) {
  return static_cast<uint32_t>(round_to_bf16(first)) | static_cast<uint32_t>(round_to_bf16(second)) << 16;
}

}  // namespace lcmd::ops::detail
