// The fp32 flash-attention kernel for AVX-512 (see attention_flash_impl.h), with the tile
// shape of attention_vec_avx512.h.
#if defined(__x86_64__)
#include "ops/attention_vec_avx512.h"

#define LCMD_ATTN_TARGET __attribute__((target(LCMD_AVX512_TARGET)))
#include "ops/attention_flash_impl.h"

namespace lcmd::ops::detail {
namespace {

AttentionGeometry geometry(int64_t head_dim) { return avx512_geometry(head_dim, /*bf16=*/false); }

template <int RC>
using Tile = FlashTile<Vec512, Fp32Arith<Vec512>, kKeyGroup, kQueryVectors, RC>;

void run_tile(const AttentionGeometry& g, const HeadKV& kv, const QueryTile& tile, float* scratch) {
  switch (g.value_chunk) {
    case 6: return Tile<6>::run(g, kv, tile, scratch);
    case 5: return Tile<5>::run(g, kv, tile, scratch);
    default: return Tile<4>::run(g, kv, tile, scratch);
  }
}

}  // namespace

const AttentionKernel& avx512_attention_kernel() {
  static const AttentionKernel kernel{"avx512", false, geometry, run_tile, pack_fp32_head};
  return kernel;
}

}  // namespace lcmd::ops::detail
#endif  // __x86_64__
