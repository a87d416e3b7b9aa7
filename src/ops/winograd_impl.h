// Private to src/ops: 3x3 stride-1 convolution as Winograd F(2x2, 3x3) with bfloat16 or int8
// products.
//
// oneDNN 2.6 has Winograd only in fp32 (F(4x4, 3x3), ~2.5x a direct fp32 convolution) and
// direct bf16 convolutions (2x fp32). F(2x2, 3x3) does 16 products per 4 outputs where direct
// does 36 (2.25x fewer), and its transforms only add and subtract, so rounding their results
// to bf16 costs about what rounding the input does in a direct bf16 convolution. F(4x4, 3x3)
// would save more, but its transforms multiply by up to 8 and bf16's 8-bit mantissa cannot
// take that. The products run as one batched oneDNN bf16 matmul per band of tiles; the
// transforms are hand-written here. In int8 the same holds against oneDNN's direct int8
// convolution (16 int8 products per 4 outputs instead of 36), with the products quantized in
// the transformed domain (WinogradF2Int8).
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace lcmd::ops::detail {

// Writes rows [begin, end) of image `image` of a convolution's input, NHWC (width x channels
// floats per row), to `out`, on the threads the caller has (one, inside a thread's own band).
// For inputs made on the fly (GroupNorm, 2x upsampling) rather than stored.
using MakeRows = std::function<void(int64_t image, int64_t begin, int64_t end, float* out)>;

// Winograd F(2x2, 3x3) units: a 4x4 input tile gives a 2x2 output tile.
constexpr int kWinogradF2Points = 16;

// A band's working memory (its V and M), per thread. From 2 to 16 MB the VAE's layers run
// equally fast; the buffers are kept per thread, so more would only be held.
constexpr size_t kWinogradF2BandBytes = size_t{4} << 20;

// The banding and the products' primitives both precisions share; run_band is theirs.
class WinogradF2 {
 public:
  virtual ~WinogradF2() = default;

  // y [N, H, W, cout] = conv3x3(x, padding 1) + bias (+ residual), x [N, H, W, cin] either stored
  // (`x`) or made band by band (`make_rows`, when x is null). bias and residual may be null.
  // A band's working memory takes about band_bytes (see bytes_per_tile).
  void run(int64_t batch, int64_t height, int64_t width, const float* x, const MakeRows& make_rows, const float* bias,
           const float* residual, float* y, size_t band_bytes = kWinogradF2BandBytes) const;

  // The transformed weights, [16, cin, cout] in the products' layout.
  const dnnl::memory& transformed_weights() const { return weights_; }

  // The oneDNN matmul the products run on, e.g. "brg:avx512_core_bf16".
  std::string implementation() const;

 protected:
  WinogradF2(int64_t cin, int64_t cout) : cin_(cin), cout_(cout) {}

  struct Product {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul primitive;
  };
  struct Geometry {
    int64_t height, width, tiles_h, tiles_w;
    const float* zeros;  // cin zeros: the padding's pixels
  };
  struct Band {  // tile rows [first_row, end_row) of one image, and the product for its tile count
    int64_t image, first_row, end_row;
    const Product* product = nullptr;
  };

  // The products of `tiles` tiles (the weights_ layout fixed); thrown errors leave nothing cached.
  virtual dnnl::matmul::primitive_desc product_desc(int64_t tiles) const = 0;
  // A band's working memory per tile.
  virtual size_t bytes_per_tile() const = 0;
  // Where one thread's bands read their input rows: the stored map x, or rows made by make_rows
  // into the thread's buffer. A thread runs consecutive bands, which share two input rows: the
  // buffer keeps the last band's rows [first, end) of `image`, and those are not made again.
  struct BandInput {
    const float* x;
    const MakeRows* make_rows;
    int64_t image = -1, first = 0, end = 0;
    size_t bytes = 0;  // the most this run asked of the buffer: asking more may move it
  };
  virtual void run_band(const Band& band, const Geometry& g, BandInput& input, const float* bias,
                        const float* residual, float* y) const = 0;

  // The band's input rows [2 first_row - 1, 2 end_row + 1) clipped to the image: in x, or made
  // into the calling thread's kConvertedSource buffer (which nothing else in a band may use: it
  // holds the rows the next band shares). *first is the first of them.
  const float* band_rows(const Band& band, const Geometry& g, BandInput& input, int64_t* first) const;
  // Calls f(t, tx_first, tx_last, ty) for the band's tiles split at its tile rows, on all threads.
  template <class F>
  void for_band_tiles(const Band& band, const Geometry& g, int64_t channels, F&& f) const;
  // The four input rows tile row ty reads (null above or below the image), within the band's
  // input rows (band_rows: the image's row r0 on).
  void tile_row_inputs(const Geometry& g, const float* rows, int64_t r0, int64_t ty, const float* in[4]) const;
  // V = B^T d B of the band's tiles from its input rows (band_rows), into v ([16][tiles][cin],
  // bf16), on all threads.
  void transform_input(const Band& band, const Geometry& g, const float* rows, int64_t r0, uint16_t* v) const;
  // M = V U, the band's batched matmul (v and m in the product's source and destination types).
  void run_products(const Band& band, const void* v, void* m) const;

  int64_t cin_, cout_;
  dnnl::memory weights_;  // [16, cin, cout], in the products' preferred layout

 private:
  const Product& product(int64_t tiles) const;  // cached per tile count
  mutable std::mutex mutex_;
  mutable std::map<int64_t, Product> products_;
};

// Products in bf16: V and U rounded to bf16, f32 accumulation (~4e-3 relative error per layer).
class WinogradF2Bf16 : public WinogradF2 {
 public:
  // weight: [cout, cin, 3, 3] (PyTorch layout, float32); transformed and rounded to bf16 once.
  WinogradF2Bf16(const float* weight, int64_t cin, int64_t cout);
  // From weights transformed already ([16, cin, cout] bf16, as transformed_weights() gives them,
  // e.g. from a packed model): used in place when `in_place` (their data outlives the layer) and
  // in the layout the products want, else re-laid out. Counted as stored_weights_use() counts.
  WinogradF2Bf16(const dnnl::memory& transformed, int64_t cin, int64_t cout, bool in_place);

 private:
  dnnl::matmul::primitive_desc product_desc(int64_t tiles) const override;
  size_t bytes_per_tile() const override;
  void run_band(const Band& band, const Geometry& g, BandInput& input, const float* bias, const float* residual,
                float* y) const override;
};

// Products in int8: U quantized per output channel (symmetric, as the direct int8 convolution's
// weights, one scale for all 16 points, which the products' primitive applies), V per point and
// tile row (symmetric s8, scale max |V| / 127: the transforms' sums and differences are about
// symmetric, and without zero points the rescaling is one factor per point in the output
// transform). Tile rows are the unit so that results do not depend on the band split, hence on
// the thread count.
class WinogradF2Int8 : public WinogradF2 {
 public:
  // weight: [cout, cin, 3, 3] (PyTorch layout, float32).
  WinogradF2Int8(const float* weight, int64_t cin, int64_t cout);
  // From transformed weights [16, cin, cout] in any float layout (a packed model's bf16 ones).
  WinogradF2Int8(const dnnl::memory& transformed, int64_t cin, int64_t cout);

 private:
  void quantize_weights(const float* u);  // u: [16, cin, cout] float32
  // V of tile row ty (its input rows as for tile_row_inputs) in float32 into v ([16][tiles_w][cin]),
  // then quantized per point into q ([16][tiles_w][cin], point_stride apart), the 16 scales into
  // point_scales (NaN where a value is NaN).
  void quantize_tile_row(const Geometry& g, const float* rows, int64_t r0, int64_t ty, float* v, int8_t* q,
                         int64_t point_stride, float* point_scales) const;
  dnnl::matmul::primitive_desc product_desc(int64_t tiles) const override;
  size_t bytes_per_tile() const override;
  void run_band(const Band& band, const Geometry& g, BandInput& input, const float* bias, const float* residual,
                float* y) const override;

  std::vector<float> scales_;  // [cout]: U ~ scales_ * q, for every point and input channel
};

// The weights [cout, cin, 3, 3] back from transformed ones ([16, cin, cout], any layout): the
// left inverse of G (rows g0 = u0, g1 = u1 - u2, g2 = u3) on both sides. Exact for exact U; for
// bf16-rounded U, within bf16 rounding of the weights' sums (a packed model's fp32 reading).
std::vector<float> inverse_winograd_f2(const dnnl::memory& transformed, int64_t cin, int64_t cout);

// The dims of transformed weights, which tell them apart in a stored layout (rank 3 where a
// convolution's weights have rank 4 and a matrix rank 2).
inline dnnl::memory::dims winograd_f2_dims(int64_t cin, int64_t cout) { return {kWinogradF2Points, cin, cout}; }


}  // namespace lcmd::ops::detail
