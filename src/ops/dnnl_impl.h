// Private to src/ops: the oneDNN engine, per-thread streams and scratchpads shared by the
// convolution, matmul and attention code.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "ops/ops.h"

namespace lcmd::ops::detail {

const dnnl::engine& cpu_engine();

// Attributes every primitive here is created with: the scratchpad is passed in by
// run_primitive (user mode), so one primitive can run on several threads at once.
dnnl::primitive_attr user_scratchpad_attr();

// Executes prim on the calling thread's stream, adding a scratchpad from a per-thread buffer
// sized for pd. Blocks until done.
void run_primitive(const dnnl::primitive& prim, const dnnl::primitive_desc_base& pd,
                   std::unordered_map<int, dnnl::memory> args);

// oneDNN's OpenMP runtime sizes its teams from the calling thread's omp_get_max_threads();
// this sets that to ops::num_threads() (a no-op inside a parallel region).
void sync_openmp_threads();

// A memory object over caller-owned data (no copy).
dnnl::memory wrap_memory(const dnnl::memory::desc& md, const void* data);

// Grow-only, 64-byte aligned buffers owned by the calling thread, one per slot, for the
// copies an op makes of its input or output for one call (bf16/int8 sources, Winograd's
// blocked layout). They live as long as the thread, sized by the largest call so far.
enum class ThreadBuffer { kConvertedSource, kBlockedSource, kBlockedDestination, kTransformedRow };
constexpr size_t kThreadBufferCount = 4;
void* thread_buffer(ThreadBuffer slot, size_t bytes);

// Layers with fewer input or output channels than this run INT8 requests as BF16 (or FP32):
// such thin layers (SD's conv_in 4->320 and conv_out 320->4) are memory-bound, so int8 saves
// nothing there, while their error lands on the model's input or output unfiltered.
constexpr int64_t kMinInt8Channels = 16;

// The precision a layer asking for `requested` runs at on this CPU (runnable_precision in
// ops.h, and the thin-layer rule above); prints a one-time note on stderr when the CPU lacks
// the requested precision.
Precision layer_precision(Precision requested, int64_t in_channels, int64_t out_channels);

// Prints a one-time note (per precision) that oneDNN has only its reference loops for a layer
// at that precision, so the layer runs fp32.
void note_layer_fallback(Precision requested, const std::string& layer);

}  // namespace lcmd::ops::detail

namespace lcmd::ops::detail {

// True for oneDNN's reference (naive loop) implementations: correct but 10-100x slower, so a
// weights layout that only they accept is not worth keeping.
bool is_reference_impl(const dnnl::primitive_desc_base& pd);

// A new memory object with from's contents in layout `to` (a oneDNN reorder).
dnnl::memory relayout(const dnnl::memory& from, const dnnl::memory::desc& to);

// A reorder (layout or data type conversion) created once and run per call with run_primitive.
struct ReorderStep {
  dnnl::reorder::primitive_desc pd;
  dnnl::reorder primitive;
};
ReorderStep make_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to);

// dst[i] = src[i] for n floats, split over the threads.
void parallel_copy(float* dst, const float* src, int64_t n);

// ---- Weights stored in their compute layout (stored_layout.cpp) ----

// A blocked layout as JSON text, or "" when it cannot be stored (not plain blocked, e.g. int8
// weights with oneDNN's zero-point compensation appended, or a data type other than f32/bf16/f16).
std::string describe_layout(const dnnl::memory::desc& md);
// The descriptor back, for weights of `dims`; std::invalid_argument for anything malformed or
// hostile (other dims, unknown type, blocks that do not fit, strides reaching past the data).
dnnl::memory::desc layout_from_json(const std::string& layout, const dnnl::memory::dims& dims);
// The stored weights as a memory object over their data (no copy), checked as above and
// against their byte size.
dnnl::memory stored_weights_memory(const StoredWeights& stored, const dnnl::memory::dims& dims);
// Any weights memory reordered into a new float32 buffer of `tag` order (e.g. to quantize).
std::vector<float> to_plain_f32(const dnnl::memory& weights, const dnnl::memory::dims& dims, dnnl::memory::format_tag tag);
// The weights a layer keeps, in layout `target`: `given` itself when `in_place` (its data outlives
// the layer: a packed model's mapping) and already in that layout, else a re-laid-out copy of
// `given` -- or of `int8_values` when the layer quantized them (their reorder also computes
// oneDNN's zero-point compensation). Layers built in place are counted (stored_weights_use).
dnnl::memory keep_weights(const dnnl::memory& given, const std::optional<dnnl::memory>& int8_values,
                          const dnnl::memory::desc& target, bool in_place);
// Counts a layer built from stored weights (stored_weights_use) that keep_weights does not see.
void count_stored_weights_use(bool used_in_place);
// The rank of stored weights' "dims" (0 when the layout has none): 2 for a matrix, 4 for a
// convolution, 3 for a Winograd F(2x2, 3x3) transform (winograd_impl.h).
size_t stored_rank(const StoredWeights& stored);
bool is_winograd_f2_layout(const StoredWeights& stored);  // rank 3

}  // namespace lcmd::ops::detail
