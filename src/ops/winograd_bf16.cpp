// Winograd F(2x2, 3x3) with bf16 products (see winograd_impl.h).
//
// Per band of whole tile rows of one image:
//  1. input transform: each 4x4 input tile d (stride 2, zero padding 1) becomes V = B^T d B,
//     16 points per channel, rounded to bf16 and stored point-major, [16][tiles][cin];
//  2. products: M[p] = V[p] U[p] for the 16 points p, one batched bf16 matmul ([16][cin][cout]
//     weights U = G g G^T, transformed once);
//  3. output transform: Y = A^T M A, the 2x2 outputs of each tile, plus bias and residual,
//     written into the NHWC output.
// The band's V and M stay near the caches instead of making a full-image round trip to memory.
#include "ops/winograd_impl.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include "ops/dnnl_impl.h"
#include "ops/parallel_impl.h"

namespace lcmd::ops::detail {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {

// Round to nearest even, as oneDNN's and the CPU's own conversions; a NaN stays a (quiet) NaN.
inline uint16_t to_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// V = B^T d B for tiles [first, last) of a tile row, read from the four input rows the row
// spans (null above or below the image) into the band's V at tile index `slot` on.
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
LCMD_VECTOR_CLONES
void input_transform(const float* const rows[4], const float* zeros, int64_t width, int64_t channels, int64_t first,
                     int64_t last, uint16_t* v, int64_t point_stride, int64_t slot) {
  for (int64_t tx = first; tx < last; ++tx, ++slot) {
    const float* p[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t col = 2 * tx - 1 + j;
        p[i * 4 + j] = rows[i] && col >= 0 && col < width ? rows[i] + col * channels : zeros;
      }
    uint16_t* out = v + slot * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      float t[4][4];
      for (int j = 0; j < 4; ++j) {
        const float d0 = p[j][c], d1 = p[4 + j][c], d2 = p[8 + j][c], d3 = p[12 + j][c];
        t[0][j] = d0 - d2;
        t[1][j] = d1 + d2;
        t[2][j] = d2 - d1;
        t[3][j] = d1 - d3;
      }
      for (int i = 0; i < 4; ++i) {
        out[(i * 4 + 0) * point_stride + c] = to_bf16(t[i][0] - t[i][2]);
        out[(i * 4 + 1) * point_stride + c] = to_bf16(t[i][1] + t[i][2]);
        out[(i * 4 + 2) * point_stride + c] = to_bf16(t[i][2] - t[i][1]);
        out[(i * 4 + 3) * point_stride + c] = to_bf16(t[i][1] - t[i][3]);
      }
    }
  }
}

// Y = A^T M A (+ bias, + residual) for tiles [first, last) of output tile row `ty`, from the
// band's M at tile index `slot` on. A^T = [1 1 1 0; 0 1 -1 -1]. Outputs past the image's edge
// (odd sizes) go to `spill`.
LCMD_VECTOR_CLONES
void output_transform(const float* m, int64_t point_stride, int64_t slot, const float* bias, const float* residual,
                      float* y, float* spill, int64_t height, int64_t width, int64_t channels, int64_t ty,
                      int64_t first, int64_t last) {
  for (int64_t tx = first; tx < last; ++tx, ++slot) {
    float* out[4];
    const float* res[4];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        const int64_t row = 2 * ty + i, col = 2 * tx + j;
        const bool inside = row < height && col < width;
        const int64_t offset = (row * width + col) * channels;
        out[i * 2 + j] = inside ? y + offset : spill;
        res[i * 2 + j] = residual && inside ? residual + offset : nullptr;
      }
    const float* in = m + slot * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      float s[2][4];
      for (int j = 0; j < 4; ++j) {
        const float m0 = in[j * point_stride + c], m1 = in[(4 + j) * point_stride + c];
        const float m2 = in[(8 + j) * point_stride + c], m3 = in[(12 + j) * point_stride + c];
        s[0][j] = m0 + m1 + m2;
        s[1][j] = m1 - m2 - m3;
      }
      const float b = bias ? bias[c] : 0.f;
      for (int i = 0; i < 2; ++i) {
        out[i * 2][c] = s[i][0] + s[i][1] + s[i][2] + b;
        out[i * 2 + 1][c] = s[i][1] - s[i][2] - s[i][3] + b;
      }
    }
    if (residual)
      for (int k = 0; k < 4; ++k)
        if (res[k]) {
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) out[k][c] += res[k][c];
        }
  }
}

// U = G g G^T for input channels [first, last) and every output channel, into [16][cin][cout]:
// G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. Output channels innermost, so the writes are in order.
LCMD_VECTOR_CLONES
void transform_weights(const float* weight, int64_t cin, int64_t cout, int64_t first, int64_t last, uint16_t* u) {
  for (int64_t i = first; i < last; ++i) {
#pragma omp simd
    for (int64_t o = 0; o < cout; ++o) {
      const float* g = weight + (o * cin + i) * 9;
      float gg[4][3];  // G g
      for (int k = 0; k < 3; ++k) {
        gg[0][k] = g[k];
        gg[1][k] = 0.5f * (g[k] + g[3 + k] + g[6 + k]);
        gg[2][k] = 0.5f * (g[k] - g[3 + k] + g[6 + k]);
        gg[3][k] = g[6 + k];
      }
      for (int a = 0; a < 4; ++a) {
        const float row[4] = {gg[a][0], 0.5f * (gg[a][0] + gg[a][1] + gg[a][2]), 0.5f * (gg[a][0] - gg[a][1] + gg[a][2]),
                              gg[a][2]};
        for (int b = 0; b < 4; ++b) u[((a * 4 + b) * cin + i) * cout + o] = to_bf16(row[b]);
      }
    }
  }
}

constexpr int64_t kReferenceTiles = 256;  // the tile count the weights' layout is chosen for

memory::desc points_desc(int64_t tiles, int64_t channels, dt type) {
  return memory::desc({kWinogradF2Points, tiles, channels}, type, tag::abc);
}

// The weights layout oneDNN's bf16 matmul wants for these products; runtime_error if it has
// only its reference loops.
memory::desc make_preferred_weights_desc(int64_t cin, int64_t cout) {
  const memory::desc any(winograd_f2_dims(cin, cout), dt::bf16, tag::any);
  const dnnl::matmul::desc desc(points_desc(kReferenceTiles, cin, dt::bf16), any,
                                points_desc(kReferenceTiles, cout, dt::f32));
  const dnnl::matmul::primitive_desc pd(desc, user_scratchpad_attr(), cpu_engine());
  if (is_reference_impl(pd))
    throw std::runtime_error("Winograd F(2x2, 3x3): oneDNN has no fast bf16 matmul for " + std::to_string(cin) + " -> " +
                             std::to_string(cout) + " channels");
  return pd.weights_desc();
}

// The same, remembered per shape: a model has a few shapes for dozens of layers, and creating a
// matmul descriptor takes ~1-2 ms of a packed model's start.
memory::desc preferred_weights_desc(int64_t cin, int64_t cout) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, int64_t>, memory::desc> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find({cin, cout});
  if (it == known.end()) it = known.emplace(std::make_pair(cin, cout), make_preferred_weights_desc(cin, cout)).first;
  return it->second;
}

}  // namespace

WinogradF2Bf16::WinogradF2Bf16(const float* weight, int64_t cin, int64_t cout) : cin_(cin), cout_(cout) {
  const memory::desc target = preferred_weights_desc(cin, cout);
  std::vector<uint16_t> u(static_cast<size_t>(kWinogradF2Points * cin * cout));
  parallel_range(cin, std::max<int64_t>(1, kElementwiseGrain / (16 * cout)),
                 [&](int64_t first, int64_t last) { transform_weights(weight, cin, cout, first, last, u.data()); });
  weights_ = relayout(wrap_memory({winograd_f2_dims(cin, cout), dt::bf16, tag::abc}, u.data()), target);
}

WinogradF2Bf16::WinogradF2Bf16(const memory& transformed, int64_t cin, int64_t cout, bool in_place)
    : cin_(cin), cout_(cout) {
  weights_ = keep_weights(transformed, std::nullopt, preferred_weights_desc(cin, cout), in_place);
}

std::vector<float> inverse_winograd_f2(const memory& transformed, int64_t cin, int64_t cout) {
  const std::vector<float> u = to_plain_f32(transformed, winograd_f2_dims(cin, cout), tag::abc);
  std::vector<float> g(static_cast<size_t>(cout * cin * 9));
  const auto at = [&](int a, int b, int64_t i, int64_t o) { return u[((a * 4 + b) * cin + i) * cout + o]; };
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t i = 0; i < cin; ++i) {
      float v[3][4];  // G+ U, G+ = [1 0 0 0; 0 1 -1 0; 0 0 0 1]
      for (int b = 0; b < 4; ++b) {
        v[0][b] = at(0, b, i, o);
        v[1][b] = at(1, b, i, o) - at(2, b, i, o);
        v[2][b] = at(3, b, i, o);
      }
      float* out = g.data() + (o * cin + i) * 9;
      for (int r = 0; r < 3; ++r) {  // (G+ U) G+^T
        out[r * 3 + 0] = v[r][0];
        out[r * 3 + 1] = v[r][1] - v[r][2];
        out[r * 3 + 2] = v[r][3];
      }
    }
  return g;
}

int64_t winograd_f2_band_tiles(int64_t cin, int64_t cout, size_t budget) {
  const size_t per_tile = kWinogradF2Points * static_cast<size_t>(cin * 2 + cout * 4);
  return std::max<int64_t>(16, static_cast<int64_t>(budget / per_tile));
}


const WinogradF2Bf16::Product& WinogradF2Bf16::product(int64_t tiles) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = products_.find(tiles);
  if (it == products_.end()) {
    const dnnl::matmul::desc desc(points_desc(tiles, cin_, dt::bf16), weights_.get_desc(),
                                  points_desc(tiles, cout_, dt::f32));
    dnnl::matmul::primitive_desc pd(desc, user_scratchpad_attr(), cpu_engine());
    dnnl::matmul primitive(pd);
    it = products_.emplace(tiles, Product{std::move(pd), std::move(primitive)}).first;
  }
  return it->second;
}

std::string WinogradF2Bf16::implementation() const { return product(kReferenceTiles).pd.impl_info_str(); }

void WinogradF2Bf16::run_band(const Band& band, const Geometry& g, const float* x, const MakeRows& make_rows,
                              const float* bias, const float* residual, float* y) const {
  const int64_t n = band.image, ty0 = band.first_row, tiles = (band.end_row - band.first_row) * g.tiles_w;
  const int64_t row_floats = g.width * cin_;
  // The band's input rows: [2 ty0 - 1, 2 ty1 + 1) within the image.
  const int64_t r0 = std::max<int64_t>(0, 2 * ty0 - 1), r1 = std::min(g.height, 2 * band.end_row + 1);
  const float* rows = x ? x + (n * g.height + r0) * row_floats : nullptr;
  if (!x) {
    auto* made = static_cast<float*>(thread_buffer(ThreadBuffer::kConvertedSource, (r1 - r0) * row_floats * sizeof(float)));
    make_rows(n, r0, r1, made);
    rows = made;
  }
  auto* v = static_cast<uint16_t*>(
      thread_buffer(ThreadBuffer::kBlockedSource, kWinogradF2Points * tiles * cin_ * sizeof(uint16_t)));
  auto* m = static_cast<float*>(
      thread_buffer(ThreadBuffer::kBlockedDestination, kWinogradF2Points * tiles * cout_ * sizeof(float)));
  parallel_range(tiles, std::max<int64_t>(1, kElementwiseGrain / (16 * cin_)), [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last;) {
      const int64_t ty = ty0 + t / g.tiles_w, tx = t % g.tiles_w, end = std::min(last, t - tx + g.tiles_w);
      const float* in[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t r = 2 * ty - 1 + i;
        in[i] = r >= 0 && r < g.height ? rows + (r - r0) * row_floats : nullptr;
      }
      input_transform(in, g.zeros, g.width, cin_, tx, tx + (end - t), v, tiles * cin_, t);
      t = end;
    }
  });
  const Product& p = *band.product;
  run_primitive(p.primitive, p.pd,
                {{DNNL_ARG_SRC, wrap_memory(p.pd.src_desc(), v)},
                 {DNNL_ARG_WEIGHTS, weights_},
                 {DNNL_ARG_DST, wrap_memory(p.pd.dst_desc(), m)}});
  const int64_t image = n * g.height * g.width * cout_;
  parallel_range(tiles, std::max<int64_t>(1, kElementwiseGrain / (16 * cout_)), [&](int64_t first, int64_t last) {
    std::vector<float> spill(cout_);
    for (int64_t t = first; t < last;) {
      const int64_t ty = ty0 + t / g.tiles_w, tx = t % g.tiles_w, end = std::min(last, t - tx + g.tiles_w);
      output_transform(m, tiles * cout_, t, bias, residual ? residual + image : nullptr, y + image, spill.data(),
                       g.height, g.width, cout_, ty, tx, tx + (end - t));
      t = end;
    }
  });
}

void WinogradF2Bf16::run(int64_t batch, int64_t height, int64_t width, const float* x, const MakeRows& make_rows,
                         const float* bias, const float* residual, float* y, size_t band_bytes) const {
  const std::vector<float> zeros(cin_, 0.f);
  const Geometry g{height, width, (height + 1) / 2, (width + 1) / 2, zeros.data()};
  const int threads = num_threads();
  // Near-equal bands of whole tile rows within the budget. With several threads each runs its
  // own bands start to end (transforms and products, no barrier between the steps); a single
  // image is cut into a multiple of the thread count, so all finish together.
  const int64_t budget_rows = std::max<int64_t>(1, winograd_f2_band_tiles(cin_, cout_, band_bytes) / g.tiles_w);
  int64_t per_image = (g.tiles_h + budget_rows - 1) / budget_rows;
  const bool own_bands = threads > 1 && batch * g.tiles_h >= threads;
  if (own_bands && batch < threads) per_image = (per_image + threads - 1) / threads * threads;
  per_image = std::min(per_image, g.tiles_h);
  std::vector<Band> bands;
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t b = 0; b < per_image; ++b)
      bands.push_back({n, g.tiles_h * b / per_image, g.tiles_h * (b + 1) / per_image});
  // The products' primitives first (looked up once per band): creating one can throw, which must
  // not happen on a team thread.
  for (Band& band : bands) band.product = &product((band.end_row - band.first_row) * g.tiles_w);
  if (!own_bands) {
    for (const Band& band : bands) run_band(band, g, x, make_rows, bias, residual, y);
    return;
  }
  std::exception_ptr failure;  // e.g. bad_alloc for a band's buffers: rethrown here
  std::mutex failure_mutex;
  parallel_slices(static_cast<int64_t>(bands.size()), threads, [&](int, int64_t first, int64_t last) {
    try {
      for (int64_t b = first; b < last; ++b) run_band(bands[b], g, x, make_rows, bias, residual, y);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  });
  if (failure) std::rethrow_exception(failure);
}

}  // namespace lcmd::ops::detail
