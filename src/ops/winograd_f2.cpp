// Winograd F(2x2, 3x3) with bf16 or int8 products (see winograd_impl.h).
//
// Per band of whole tile rows of one image:
//  1. input transform: each 4x4 input tile d (stride 2, zero padding 1) becomes V = B^T d B,
//     16 points per channel, stored point-major, [16][tiles][cin]: rounded to bf16, or (int8)
//     in float32 and then quantized per point and tile row;
//  2. products: M[p] = V[p] U[p] for the 16 points p, one batched matmul ([16][cin][cout]
//     weights U = G g G^T, transformed once);
//  3. output transform: Y = A^T M A, the 2x2 outputs of each tile (int8: rescaled first), plus
//     bias and residual, written into the NHWC output.
// The band's V and M stay near the caches instead of making a full-image round trip to memory.
#include "ops/winograd_impl.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>

#include "ops/dnnl_impl.h"
#include "ops/parallel_impl.h"
#include "ops/quantize_impl.h"

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

// The 16 input pixels of tile tx of a tile row (d, 4x4 from (2 ty - 1, 2 tx - 1)), read from the
// four input rows the row spans (null above or below the image); `zeros` outside the image.
[[gnu::always_inline]] inline void tile_pixels(const float* const rows[4], const float* zeros, int64_t width,
                                               int64_t channels, int64_t tx, const float* p[16]) {
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int64_t col = 2 * tx - 1 + j;
      p[i * 4 + j] = rows[i] && col >= 0 && col < width ? rows[i] + col * channels : zeros;
    }
}

// V = B^T d B of one channel (T float) or of 16 (a vector), the 4x4 d row-major.
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
template <class T>
[[gnu::always_inline]] inline void transform_tile(const T d[16], T v[16]) {
  T t[4][4];
  for (int j = 0; j < 4; ++j) {
    t[0][j] = d[j] - d[8 + j];
    t[1][j] = d[4 + j] + d[8 + j];
    t[2][j] = d[8 + j] - d[4 + j];
    t[3][j] = d[4 + j] - d[12 + j];
  }
  for (int i = 0; i < 4; ++i) {
    v[i * 4 + 0] = t[i][0] - t[i][2];
    v[i * 4 + 1] = t[i][1] + t[i][2];
    v[i * 4 + 2] = t[i][2] - t[i][1];
    v[i * 4 + 3] = t[i][1] - t[i][3];
  }
}

// V = B^T d B for tiles [first, last) of a tile row (see tile_pixels): store(point, i, value)
// takes each value, i being (slot + tile - first) * channels + c, its index within the point's
// [tiles][channels].
template <class Store>
[[gnu::always_inline]] inline void input_transform_tiles(const float* const rows[4], const float* zeros, int64_t width,
                                                          int64_t channels, int64_t first, int64_t last, int64_t slot,
                                                          Store store) {
  for (int64_t tx = first; tx < last; ++tx, ++slot) {
    const float* p[16];
    tile_pixels(rows, zeros, width, channels, tx, p);
    const int64_t at = slot * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      // transform_tile's arithmetic written out: GCC does not vectorise this loop over arrays
      // of the sixteen values (measured: the bf16 VAE 1.0 -> 1.85 s).
      float t[4][4];
      for (int j = 0; j < 4; ++j) {
        const float d0 = p[j][c], d1 = p[4 + j][c], d2 = p[8 + j][c], d3 = p[12 + j][c];
        t[0][j] = d0 - d2;
        t[1][j] = d1 + d2;
        t[2][j] = d2 - d1;
        t[3][j] = d1 - d3;
      }
      for (int i = 0; i < 4; ++i) {
        store(i * 4 + 0, at + c, t[i][0] - t[i][2]);
        store(i * 4 + 1, at + c, t[i][1] + t[i][2]);
        store(i * 4 + 2, at + c, t[i][2] - t[i][1]);
        store(i * 4 + 3, at + c, t[i][1] - t[i][3]);
      }
    }
  }
}

// V rounded to bf16 into the band's v ([16][tiles][channels], point_stride = tiles * channels).
LCMD_VECTOR_CLONES
void input_transform(const float* const rows[4], const float* zeros, int64_t width, int64_t channels, int64_t first,
                     int64_t last, uint16_t* v, int64_t point_stride, int64_t slot) {
  input_transform_tiles(rows, zeros, width, channels, first, last, slot,
                        [=](int point, int64_t i, float value) { v[point * point_stride + i] = to_bf16(value); });
}

// |x|'s bits: for non-negative floats the integer order is the numeric one, and a NaN is above
// infinity, so an integer max keeps a NaN where a float max would pass it over.
[[gnu::always_inline]] inline int32_t magnitude_bits(float x) { return std::bit_cast<int32_t>(x) & 0x7fffffff; }

// The float32 input_transform of tiles [first, last) of a tile row, which also raises
// max_bits[point] to the largest magnitude_bits of the point's values (the int8 path's scales
// without a pass over V). Written with vectors of 16 channels: GCC does not vectorise the
// sixteen max reductions of a `#pragma omp simd` loop.
LCMD_VECTOR_CLONES
void input_transform_max(const float* const rows[4], const float* zeros, int64_t width, int64_t channels, int64_t first,
                         int64_t last, float* v, int64_t point_stride, int64_t slot, int32_t* max_bits) {
  using Floats = float __attribute__((vector_size(64)));
  using Ints = int32_t __attribute__((vector_size(64)));
  constexpr int64_t kLanes = 16;
  Ints lane_max[16] = {};
  int32_t tail_max[16] = {};
  for (int64_t tx = first; tx < last; ++tx, ++slot) {
    const float* p[16];
    tile_pixels(rows, zeros, width, channels, tx, p);
    float* out = v + slot * channels;
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) {
      Floats d[16], t[16];
      for (int k = 0; k < 16; ++k) std::memcpy(&d[k], p[k] + c, sizeof(Floats));
      transform_tile(d, t);
      for (int k = 0; k < 16; ++k) {
        std::memcpy(out + k * point_stride + c, &t[k], sizeof(Floats));
        const Ints bits = __builtin_bit_cast(Ints, t[k]) & 0x7fffffff;  // magnitude_bits, 16 lanes
        lane_max[k] = lane_max[k] > bits ? lane_max[k] : bits;
      }
    }
    for (; c < channels; ++c) {
      float d[16], t[16];
      for (int k = 0; k < 16; ++k) d[k] = p[k][c];
      transform_tile(d, t);
      for (int k = 0; k < 16; ++k) {
        out[k * point_stride + c] = t[k];
        tail_max[k] = std::max(tail_max[k], magnitude_bits(t[k]));
      }
    }
  }
  for (int k = 0; k < 16; ++k) {
    int32_t m = std::max(max_bits[k], tail_max[k]);
    for (int64_t l = 0; l < kLanes; ++l) m = std::max(m, lane_max[k][l]);
    max_bits[k] = m;
  }
}

// Y = A^T M A (+ bias, + residual) for tiles [first, last) of output tile row `ty`, the band's
// M read at tile index `slot` on by load(point, i), i its index within the point's
// [tiles][channels]. A^T = [1 1 1 0; 0 1 -1 -1].
// Outputs past the image's edge (odd sizes) go to `spill`.
template <class Load>
[[gnu::always_inline]] inline void output_transform_tiles(int64_t slot, const float* bias, const float* residual,
                                                           float* y, float* spill, int64_t height, int64_t width,
                                                           int64_t channels, int64_t ty, int64_t first, int64_t last,
                                                           Load load) {
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
    const int64_t at = slot * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      float s[2][4];
      for (int j = 0; j < 4; ++j) {
        const float m0 = load(j, at + c), m1 = load(4 + j, at + c);
        const float m2 = load(8 + j, at + c), m3 = load(12 + j, at + c);
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

LCMD_VECTOR_CLONES
void output_transform(const float* m, int64_t point_stride, int64_t slot, const float* bias, const float* residual,
                      float* y, float* spill, int64_t height, int64_t width, int64_t channels, int64_t ty,
                      int64_t first, int64_t last) {
  output_transform_tiles(slot, bias, residual, y, spill, height, width, channels, ty, first, last,
                         [&](int point, int64_t i) { return m[point * point_stride + i]; });
}

// The same with each point's products scaled by point_scales[point] (int8: the tile row's input
// scale of that point; the weights' scale is applied by the products' primitive).
LCMD_VECTOR_CLONES
void output_transform(const float* m, const float* point_scales, int64_t point_stride, int64_t slot, const float* bias,
                      const float* residual, float* y, float* spill, int64_t height, int64_t width, int64_t channels,
                      int64_t ty, int64_t first, int64_t last) {
  output_transform_tiles(slot, bias, residual, y, spill, height, width, channels, ty, first, last,
                         [&](int point, int64_t i) { return m[point * point_stride + i] * point_scales[point]; });
}

// U = G g G^T for input channels [first, last) and every output channel, into [16][cin][cout]:
// G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. Output channels innermost, so the writes are in order.
template <class T, class Convert>
[[gnu::always_inline]] inline void transform_weights_of(const float* weight, int64_t cin, int64_t cout, int64_t first,
                                                         int64_t last, T* u, Convert convert) {
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
        for (int b = 0; b < 4; ++b) u[((a * 4 + b) * cin + i) * cout + o] = convert(row[b]);
      }
    }
  }
}

LCMD_VECTOR_CLONES
void transform_weights(const float* weight, int64_t cin, int64_t cout, int64_t first, int64_t last, uint16_t* u) {
  transform_weights_of(weight, cin, cout, first, last, u, [](float value) { return to_bf16(value); });
}

LCMD_VECTOR_CLONES
void transform_weights(const float* weight, int64_t cin, int64_t cout, int64_t first, int64_t last, float* u) {
  transform_weights_of(weight, cin, cout, first, last, u, [](float value) { return value; });
}

// All of U = G g G^T, [16][cin][cout], in T, on all threads.
template <class T>
std::vector<T> transformed(const float* weight, int64_t cin, int64_t cout) {
  std::vector<T> u(static_cast<size_t>(kWinogradF2Points * cin * cout));
  parallel_range(cin, std::max<int64_t>(1, kElementwiseGrain / (16 * cout)),
                 [&](int64_t first, int64_t last) { transform_weights(weight, cin, cout, first, last, u.data()); });
  return u;
}

constexpr int64_t kReferenceTiles = 256;  // the tile count the weights' layout is chosen for

memory::desc points_desc(int64_t tiles, int64_t channels, dt type) {
  return memory::desc({kWinogradF2Points, tiles, channels}, type, tag::abc);
}

// The products' matmul for `tiles` tiles: V in `source` x U (`weights`) -> M in float32.
// runtime_error if oneDNN has only its reference loops for it.
dnnl::matmul::primitive_desc products_desc(int64_t tiles, int64_t cin, int64_t cout, dt source,
                                           const memory::desc& weights, const dnnl::primitive_attr& attr) {
  const dnnl::matmul::desc desc(points_desc(tiles, cin, source), weights, points_desc(tiles, cout, dt::f32));
  dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
  if (is_reference_impl(pd))
    throw std::runtime_error("Winograd F(2x2, 3x3): oneDNN has no fast " + std::string(source == dt::bf16 ? "bf16" : "int8") +
                             " matmul for " + std::to_string(cin) + " -> " + std::to_string(cout) + " channels");
  return pd;
}

// The int8 products' attributes: the weights' scale per output channel (the last dimension).
dnnl::primitive_attr int8_products_attr(const std::vector<float>& weight_scales) {
  dnnl::primitive_attr attr = user_scratchpad_attr();
  attr.set_output_scales(1 << 2, weight_scales);
  return attr;
}

// The weights layout oneDNN's matmul wants for these products, remembered per shape and type: a
// model has a few shapes for dozens of layers, and creating a matmul descriptor takes ~1-2 ms
// of a packed model's start.
memory::desc preferred_weights_desc(int64_t cin, int64_t cout, dt type, const dnnl::primitive_attr& attr) {
  static std::mutex mutex;
  static std::map<std::tuple<int64_t, int64_t, dt>, memory::desc> known;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(cin, cout, type);
  auto it = known.find(key);
  if (it == known.end()) {
    const memory::desc any(winograd_f2_dims(cin, cout), type, tag::any);
    it = known.emplace(key, products_desc(kReferenceTiles, cin, cout, type, any, attr).weights_desc()).first;
  }
  return it->second;
}

memory::desc bf16_weights_desc(int64_t cin, int64_t cout) {
  return preferred_weights_desc(cin, cout, dt::bf16, user_scratchpad_attr());
}
// s8 x s8: the layout carries oneDNN's compensation for the signed source; it does not depend on
// the scales' values.
memory::desc int8_weights_desc(int64_t cin, int64_t cout) {
  return preferred_weights_desc(cin, cout, dt::s8, int8_products_attr(std::vector<float>(cout, 1.f)));
}

}  // namespace

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

// ---- WinogradF2: banding and products ----

const WinogradF2::Product& WinogradF2::product(int64_t tiles) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = products_.find(tiles);
  if (it == products_.end()) {
    dnnl::matmul::primitive_desc pd = product_desc(tiles);
    dnnl::matmul primitive(pd);
    it = products_.emplace(tiles, Product{std::move(pd), std::move(primitive)}).first;
  }
  return it->second;
}

std::string WinogradF2::implementation() const { return product(kReferenceTiles).pd.impl_info_str(); }

const float* WinogradF2::band_rows(const Band& band, const Geometry& g, BandInput& input, int64_t* first) const {
  const int64_t row_floats = g.width * cin_;
  const int64_t r0 = std::max<int64_t>(0, 2 * band.first_row - 1), r1 = std::min(g.height, 2 * band.end_row + 1);
  *first = r0;
  if (input.x) return input.x + (band.image * g.height + r0) * row_floats;
  const size_t bytes = static_cast<size_t>((r1 - r0) * row_floats) * sizeof(float);
  if (bytes > input.bytes) input.image = -1, input.bytes = bytes;  // the rows held may move
  auto* made = static_cast<float*>(thread_buffer(ThreadBuffer::kConvertedSource, bytes));
  int64_t from = r0;  // the first row to make
  if (input.image == band.image && input.first <= r0 && r0 < input.end && input.end <= r1) {
    const size_t kept = static_cast<size_t>((input.end - r0) * row_floats) * sizeof(float);
    std::memmove(made, made + (r0 - input.first) * row_floats, kept);
    from = input.end;
  }
  if (from < r1) (*input.make_rows)(band.image, from, r1, made + (from - r0) * row_floats);
  input.image = band.image, input.first = r0, input.end = r1;
  return made;
}

template <class F>
void WinogradF2::for_band_tiles(const Band& band, const Geometry& g, int64_t channels, F&& f) const {
  const int64_t tiles = (band.end_row - band.first_row) * g.tiles_w;
  parallel_range(tiles, std::max<int64_t>(1, kElementwiseGrain / (16 * channels)), [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last;) {
      const int64_t ty = band.first_row + t / g.tiles_w, tx = t % g.tiles_w, end = std::min(last, t - tx + g.tiles_w);
      f(t, tx, tx + (end - t), ty);
      t = end;
    }
  });
}

void WinogradF2::tile_row_inputs(const Geometry& g, const float* rows, int64_t r0, int64_t ty, const float* in[4]) const {
  for (int i = 0; i < 4; ++i) {
    const int64_t r = 2 * ty - 1 + i;
    in[i] = r >= 0 && r < g.height ? rows + (r - r0) * g.width * cin_ : nullptr;
  }
}

void WinogradF2::transform_input(const Band& band, const Geometry& g, const float* rows, int64_t r0,
                                 uint16_t* v) const {
  const int64_t tiles = (band.end_row - band.first_row) * g.tiles_w;
  for_band_tiles(band, g, cin_, [&](int64_t t, int64_t tx, int64_t tx_end, int64_t ty) {
    const float* in[4];
    tile_row_inputs(g, rows, r0, ty, in);
    input_transform(in, g.zeros, g.width, cin_, tx, tx_end, v, tiles * cin_, t);
  });
}

void WinogradF2::run_products(const Band& band, const void* v, void* m) const {
  const Product& p = *band.product;
  run_primitive(p.primitive, p.pd,
                {{DNNL_ARG_SRC, wrap_memory(p.pd.src_desc(), v)},
                 {DNNL_ARG_WEIGHTS, weights_},
                 {DNNL_ARG_DST, wrap_memory(p.pd.dst_desc(), m)}});
}

void WinogradF2::run(int64_t batch, int64_t height, int64_t width, const float* x, const MakeRows& make_rows,
                     const float* bias, const float* residual, float* y, size_t band_bytes) const {
  const std::vector<float> zeros(cin_, 0.f);
  const Geometry g{height, width, (height + 1) / 2, (width + 1) / 2, zeros.data()};
  const int threads = num_threads();
  // Near-equal bands of whole tile rows within the budget. With several threads each runs its
  // own bands start to end (transforms and products, no barrier between the steps); a single
  // image is cut into a multiple of the thread count, so all finish together.
  const int64_t budget_tiles = std::max<int64_t>(16, static_cast<int64_t>(band_bytes / bytes_per_tile()));
  const int64_t budget_rows = std::max<int64_t>(1, budget_tiles / g.tiles_w);
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
    BandInput input{x, &make_rows};
    for (const Band& band : bands) run_band(band, g, input, bias, residual, y);
    return;
  }
  std::exception_ptr failure;  // e.g. bad_alloc for a band's buffers: rethrown here
  std::mutex failure_mutex;
  parallel_slices(static_cast<int64_t>(bands.size()), threads, [&](int, int64_t first, int64_t last) {
    try {
      BandInput input{x, &make_rows};
      for (int64_t b = first; b < last; ++b) run_band(bands[b], g, input, bias, residual, y);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  });
  if (failure) std::rethrow_exception(failure);
}

// ---- bf16 products ----

WinogradF2Bf16::WinogradF2Bf16(const float* weight, int64_t cin, int64_t cout) : WinogradF2(cin, cout) {
  const memory::desc target = bf16_weights_desc(cin, cout);
  std::vector<uint16_t> u = transformed<uint16_t>(weight, cin, cout);
  weights_ = relayout(wrap_memory({winograd_f2_dims(cin, cout), dt::bf16, tag::abc}, u.data()), target);
}

WinogradF2Bf16::WinogradF2Bf16(const memory& transformed, int64_t cin, int64_t cout, bool in_place)
    : WinogradF2(cin, cout) {
  weights_ = keep_weights(transformed, std::nullopt, bf16_weights_desc(cin, cout), in_place);
}

dnnl::matmul::primitive_desc WinogradF2Bf16::product_desc(int64_t tiles) const {
  return products_desc(tiles, cin_, cout_, dt::bf16, weights_.get_desc(), user_scratchpad_attr());
}

size_t WinogradF2Bf16::bytes_per_tile() const {
  return kWinogradF2Points * static_cast<size_t>(cin_ * sizeof(uint16_t) + cout_ * sizeof(float));
}

void WinogradF2Bf16::run_band(const Band& band, const Geometry& g, BandInput& input, const float* bias,
                              const float* residual, float* y) const {
  const int64_t tiles = (band.end_row - band.first_row) * g.tiles_w;
  int64_t r0 = 0;
  const float* rows = band_rows(band, g, input, &r0);
  auto* v = static_cast<uint16_t*>(
      thread_buffer(ThreadBuffer::kBlockedSource, kWinogradF2Points * tiles * cin_ * sizeof(uint16_t)));
  auto* m = static_cast<float*>(
      thread_buffer(ThreadBuffer::kBlockedDestination, kWinogradF2Points * tiles * cout_ * sizeof(float)));
  transform_input(band, g, rows, r0, v);
  run_products(band, v, m);
  const int64_t image = band.image * g.height * g.width * cout_;
  for_band_tiles(band, g, cout_, [&](int64_t t, int64_t tx, int64_t tx_end, int64_t ty) {
    std::vector<float> spill(cout_);
    output_transform(m, tiles * cout_, t, bias, residual ? residual + image : nullptr, y + image, spill.data(), g.height,
                     g.width, cout_, ty, tx, tx_end);
  });
}

// ---- int8 products ----

WinogradF2Int8::WinogradF2Int8(const float* weight, int64_t cin, int64_t cout) : WinogradF2(cin, cout) {
  quantize_weights(transformed<float>(weight, cin, cout).data());
}

WinogradF2Int8::WinogradF2Int8(const memory& given, int64_t cin, int64_t cout) : WinogradF2(cin, cout) {
  quantize_weights(to_plain_f32(given, winograd_f2_dims(cin, cout), tag::abc).data());
}

void WinogradF2Int8::quantize_weights(const float* u) {
  const int64_t rows = kWinogradF2Points * cin_;  // U as [rows][cout]
  std::vector<int8_t> q(static_cast<size_t>(rows * cout_));
  scales_.assign(static_cast<size_t>(cout_), 0.f);
  int64_t bad_channel = -1;
  for (int64_t r = 0; r < rows; ++r)  // per output channel: max |U| over every point and input channel
    for (int64_t o = 0; o < cout_; ++o) {
      const float magnitude = std::fabs(u[r * cout_ + o]);
      if (!(magnitude <= std::numeric_limits<float>::max())) bad_channel = o;  // NaN or infinite
      scales_[o] = std::max(scales_[o], magnitude);
    }
  if (bad_channel >= 0)
    throw std::invalid_argument("int8 quantization: output channel " + std::to_string(bad_channel) +
                                " has a NaN or infinite weight");
  for (float& scale : scales_) scale = scale > 0.f ? scale / kInt8Max : 1.f;
  parallel_range(rows, std::max<int64_t>(1, kElementwiseGrain / cout_), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r)
      for (int64_t o = 0; o < cout_; ++o)
        q[r * cout_ + o] = static_cast<int8_t>(std::clamp(std::nearbyint(u[r * cout_ + o] / scales_[o]), -kInt8Max, kInt8Max));
  });
  weights_ = relayout(wrap_memory({winograd_f2_dims(cin_, cout_), dt::s8, tag::abc}, q.data()), int8_weights_desc(cin_, cout_));
}

dnnl::matmul::primitive_desc WinogradF2Int8::product_desc(int64_t tiles) const {
  return products_desc(tiles, cin_, cout_, dt::s8, weights_.get_desc(), int8_products_attr(scales_));
}

size_t WinogradF2Int8::bytes_per_tile() const {
  // V quantized and the products in float32 (V's float32 rows: one tile row at a time).
  return kWinogradF2Points * static_cast<size_t>(cout_ * sizeof(float) + cin_);
}

void WinogradF2Int8::quantize_tile_row(const Geometry& g, const float* rows, int64_t r0, int64_t ty, float* v,
                                       int8_t* q, int64_t point_stride, float* point_scales) const {
  const float* in[4];
  tile_row_inputs(g, rows, r0, ty, in);
  const int64_t row_values = g.tiles_w * cin_;
  const int slices = threads_for(g.tiles_w, std::max<int64_t>(1, kElementwiseGrain / (kWinogradF2Points * cin_)));
  std::vector<int32_t> slice_max(static_cast<size_t>(slices * kWinogradF2Points), 0);
  parallel_slices(g.tiles_w, slices, [&](int slice, int64_t first, int64_t last) {
    input_transform_max(in, g.zeros, g.width, cin_, first, last, v, row_values, first,
                        slice_max.data() + slice * kWinogradF2Points);
  });
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / row_values);
  parallel_range(kWinogradF2Points, grain, [&](int64_t first, int64_t last) {
    for (int64_t point = first; point < last; ++point) {
      int32_t bits = 0;
      for (int s = 0; s < slices; ++s) bits = std::max(bits, slice_max[s * kWinogradF2Points + point]);
      const float max = std::bit_cast<float>(bits);  // NaN if a value is
      point_scales[point] = max / kInt8Max;
      if (std::isnan(max) || max == 0.f)  // a NaN / infinite value: scale NaN, the outputs it reaches NaN
        std::memset(q + point * point_stride, 0, static_cast<size_t>(row_values));
      else
        quantize_symmetric(v + point * row_values, row_values, kInt8Max / max, q + point * point_stride);
    }
  });
}

void WinogradF2Int8::run_band(const Band& band, const Geometry& g, BandInput& input, const float* bias,
                              const float* residual, float* y) const {
  const int64_t rows_in_band = band.end_row - band.first_row, tiles = rows_in_band * g.tiles_w;
  int64_t r0 = 0;
  const float* rows = band_rows(band, g, input, &r0);
  // V tile row by tile row in float32 (a row is at most ~1 MB at the VAE's sizes: it stays in
  // cache for its quantization) quantized into q; the products m in float32, weight scales applied.
  const int64_t row_values = g.tiles_w * cin_;
  auto* v = static_cast<float*>(
      thread_buffer(ThreadBuffer::kTransformedRow, kWinogradF2Points * row_values * sizeof(float)));
  auto* m = static_cast<float*>(
      thread_buffer(ThreadBuffer::kBlockedDestination, kWinogradF2Points * tiles * cout_ * sizeof(float)));
  auto* q = static_cast<int8_t*>(thread_buffer(ThreadBuffer::kBlockedSource, kWinogradF2Points * tiles * cin_));
  std::vector<float> point_scales(static_cast<size_t>(rows_in_band * kWinogradF2Points));
  for (int64_t row = 0; row < rows_in_band; ++row)
    quantize_tile_row(g, rows, r0, band.first_row + row, v, q + row * row_values, tiles * cin_,
                      point_scales.data() + row * kWinogradF2Points);
  run_products(band, q, m);
  const int64_t image = band.image * g.height * g.width * cout_;
  for_band_tiles(band, g, cout_, [&](int64_t t, int64_t tx, int64_t tx_end, int64_t ty) {
    std::vector<float> spill(cout_);
    output_transform(m, point_scales.data() + (ty - band.first_row) * kWinogradF2Points, tiles * cout_, t, bias,
                     residual ? residual + image : nullptr, y + image, spill.data(), g.height, g.width, cout_, ty, tx,
                     tx_end);
  });
}

}  // namespace lcmd::ops::detail
