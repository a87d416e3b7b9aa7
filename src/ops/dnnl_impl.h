// Private to src/ops: the oneDNN engine, per-thread streams and scratchpads shared by the
// convolution, matmul and attention code.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

#include <unordered_map>

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
dnnl::memory wrap_memory(const dnnl::memory::desc& md, const float* data);

}  // namespace lcmd::ops::detail

namespace lcmd::ops::detail {

// True for oneDNN's reference (naive loop) implementations: correct but 10-100x slower, so a
// weights layout that only they accept is not worth keeping.
bool is_reference_impl(const dnnl::primitive_desc_base& pd);

// A new memory object with from's contents in layout `to` (a oneDNN reorder).
dnnl::memory relayout(const dnnl::memory& from, const dnnl::memory::desc& to);

// dst[i] = src[i] for n floats, split over the threads.
void parallel_copy(float* dst, const float* src, int64_t n);

}  // namespace lcmd::ops::detail
