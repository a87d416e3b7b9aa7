// Thread count, denormal flushing, and the oneDNN plumbing (engine, streams, scratchpads).
#include <omp.h>
#include <sched.h>
#include <xmmintrin.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "ops/dnnl_impl.h"
#include "ops/parallel_impl.h"
#include "ops/ops.h"

namespace lcmd::ops {

namespace {

std::atomic<int> g_threads{0};  // 0 = not set: use default_threads()
std::atomic<bool> g_flush_denormals{false};

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return omp_get_num_procs();
}

// Before set_num_threads is called, honour OMP_NUM_THREADS like any OpenMP program.
int default_threads() {
  static const int n = std::getenv("OMP_NUM_THREADS") ? omp_get_max_threads() : available_cpus();
  return n;
}

constexpr unsigned kFlushToZero = 0x8000;     // MXCSR.FTZ: denormal results become 0
constexpr unsigned kDenormalsAreZero = 0x40;  // MXCSR.DAZ: denormal inputs read as 0

void set_flush_bits_on_team(int threads) {
#pragma omp parallel num_threads(threads)
  _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero);
}

}  // namespace

void set_num_threads(int n) {
  if (n < 0) throw std::invalid_argument("set_num_threads: thread count must be >= 0 (0 = all cores), got " + std::to_string(n));
  const int threads = n == 0 ? available_cpus() : n;
  g_threads.store(threads);
  omp_set_num_threads(threads);
  // A bigger team may bring up threads that never saw enable_flush_denormals().
  if (g_flush_denormals.load()) set_flush_bits_on_team(threads);
}

int num_threads() {
  const int n = g_threads.load();
  return n > 0 ? n : default_threads();
}

void enable_flush_denormals() {
  g_flush_denormals.store(true);
  _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero);
  set_flush_bits_on_team(num_threads());
}

namespace detail {

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

namespace {

// A grow-only, 64-byte aligned buffer owned by one thread.
class ScratchBuffer {
 public:
  ~ScratchBuffer() { std::free(data_); }
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(data_);
      size_ = (bytes + 4095) / 4096 * 4096;
      data_ = std::aligned_alloc(64, size_);
      if (!data_) {
        size_ = 0;
        throw std::bad_alloc();
      }
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

void run_primitive(const dnnl::primitive& prim, const dnnl::primitive_desc_base& pd,
                   std::unordered_map<int, dnnl::memory> args) {
  thread_local dnnl::stream stream(cpu_engine());
  thread_local ScratchBuffer scratch;
  const dnnl::memory::desc scratch_md = pd.scratchpad_desc();
  if (scratch_md.get_size() > 0)
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_md, cpu_engine(), scratch.get(scratch_md.get_size())));
  prim.execute(stream, args);
  stream.wait();
}

void sync_openmp_threads() {
  if (omp_in_parallel()) return;
  const int n = num_threads();
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
}

dnnl::memory wrap_memory(const dnnl::memory::desc& md, const float* data) {
  // oneDNN takes a void*; sources are only read.
  return dnnl::memory(md, cpu_engine(), const_cast<float*>(data));
}

bool is_reference_impl(const dnnl::primitive_desc_base& pd) {
  const std::string impl = pd.impl_info_str();
  return impl.rfind("ref", 0) == 0;
}

dnnl::memory relayout(const dnnl::memory& from, const dnnl::memory::desc& to) {
  sync_openmp_threads();
  dnnl::memory result(to, cpu_engine());
  dnnl::reorder::primitive_desc pd(from, result, user_scratchpad_attr());
  run_primitive(dnnl::reorder(pd), pd, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, result}});
  return result;
}

void parallel_copy(float* dst, const float* src, int64_t n) {
  parallel_range(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    std::memcpy(dst + begin, src + begin, static_cast<size_t>(end - begin) * sizeof(float));
  });
}

}  // namespace detail
}  // namespace lcmd::ops
