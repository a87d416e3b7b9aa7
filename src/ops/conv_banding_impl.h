// Private to src/ops (and its tests): how Conv2d splits a large Winograd convolution into
// horizontal bands of output rows, so oneDNN's Winograd scratchpad and the blocked-layout copies
// around it are sized for a band rather than the whole image (the VAE decoder's 256-channel
// 256x256 layer needs ~430 MB in one piece, ~65 MB in bands of 32 rows).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lcmd::ops::detail {

// Output rows [begin, end) of every image of the batch.
struct RowBand {
  int64_t begin, end;
  bool operator==(const RowBand&) const = default;
};

// Working memory a Winograd band may use: its blocked source and destination plus oneDNN's
// transformed tiles (36/16 floats per pixel and channel, input and output side).
constexpr size_t kWinogradBandBytes = size_t{64} << 20;

// oneDNN's Winograd transforms the weights on every call into its scratchpad, 6x6 floats per
// input and output channel pair (1920 -> 640 channels: 177 MB). Layers whose transformed weights
// would take more than this run direct instead: the UNet's widest up-block convolutions in fp32,
// at a few ms each, rather than ~180 MB more peak memory. Every VAE layer (512 -> 512: 38 MB)
// stays on Winograd.
constexpr size_t kWinogradWeightScratchBytes = size_t{64} << 20;
constexpr size_t winograd_weight_scratch_bytes(int64_t cin, int64_t cout) {
  return static_cast<size_t>(cin) * static_cast<size_t>(cout) * 36 * sizeof(float);
}

// A band covers at least this many output pixels: each call transforms the weights again
// (oneDNN's per-call weight transform), which stays negligible from about here up.
constexpr int64_t kWinogradBandMinPixels = 4096;

// Winograd F(4x4, 3x3) computes 4x4 output tiles; bands start on tile rows so every tile sees
// the same inputs as in the unbanded convolution (bit-identical results).
constexpr int64_t kWinogradTileRows = 4;

// The working-memory estimate of a Winograd convolution over `pixels` output pixels.
size_t winograd_working_bytes(int64_t pixels, int64_t cin, int64_t cout);

// The bands the output rows [0, height) are computed in, for `batch` images `width` pixels
// wide, within budget_bytes per band: one band when the whole image fits (or is too small to
// split), else near-equal bands whose boundaries are multiples of kWinogradTileRows.
std::vector<RowBand> winograd_row_bands(int64_t batch, int64_t height, int64_t width, int64_t cin, int64_t cout,
                                        size_t budget_bytes);

// The per-band budget Conv2d plans are created with (kWinogradBandBytes unless changed). Plans
// are cached per layer and input shape, so a change applies to plans created afterwards (a
// newly constructed layer has none). For tests: a huge budget gives the unbanded convolution,
// a small one many bands.
size_t winograd_band_budget();
void set_winograd_band_budget(size_t bytes);

}  // namespace lcmd::ops::detail
