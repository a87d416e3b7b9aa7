// Thread count, denormal flushing, the CPU features behind each precision, and the oneDNN
// plumbing (engine, streams, scratchpads, per-thread buffers).
#include <omp.h>
#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
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

// Makes the calling thread treat denormals as zero, on the architectures that have a switch.
void set_flush_bits() {
#if defined(__x86_64__) || defined(__i386__)
  constexpr unsigned kFlushToZero = 0x8000;     // MXCSR.FTZ: denormal results become 0
  constexpr unsigned kDenormalsAreZero = 0x40;  // MXCSR.DAZ: denormal inputs read as 0
  _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero);
#elif defined(__aarch64__)
  constexpr uint64_t kFlushToZero = uint64_t{1} << 24;  // FPCR.FZ: denormal inputs and results become 0
  uint64_t fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  __asm__ volatile("msr fpcr, %0" : : "r"(fpcr | kFlushToZero));
#endif
}

void set_flush_bits_on_team(int threads) {
#pragma omp parallel num_threads(threads)
  set_flush_bits();
}

// oneDNN's ISA values are bit sets: an ISA includes another when it has all of its bits.
bool isa_includes(dnnl::cpu_isa isa, dnnl::cpu_isa feature) {
  const auto bits = static_cast<unsigned>(isa), wanted = static_cast<unsigned>(feature);
  return wanted != 0 && (bits & wanted) == wanted;
}

// The oneDNN ISA name for messages ("avx512_core_bf16", ...).
std::string isa_name(dnnl::cpu_isa isa) {
  using dnnl::cpu_isa;
  static const std::pair<cpu_isa, const char*> names[] = {
      {cpu_isa::avx512_core_amx, "avx512_core_amx"}, {cpu_isa::avx512_core_bf16, "avx512_core_bf16"},
      {cpu_isa::avx512_core_vnni, "avx512_core_vnni"}, {cpu_isa::avx512_core, "avx512_core"},
      {cpu_isa::avx2_vnni, "avx2_vnni"}, {cpu_isa::avx2, "avx2"}, {cpu_isa::avx, "avx"}, {cpu_isa::sse41, "sse41"}};
  for (const auto& [value, name] : names)
    if (isa_includes(isa, value)) return name;
  return "no x86 vector extension oneDNN uses";
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
  set_flush_bits();
  set_flush_bits_on_team(num_threads());
}

Precision runnable_precision(Precision requested) {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  switch (requested) {
    case Precision::FP32:
      return Precision::FP32;
    case Precision::BF16:  // without native vdpbf16ps oneDNN emulates bf16 slower than fp32 runs
      return isa_includes(isa, dnnl::cpu_isa::avx512_core_bf16) ? Precision::BF16 : Precision::FP32;
    case Precision::INT8:  // without VNNI the int8 products saturate or need a halved weight range
      return isa_includes(isa, dnnl::cpu_isa::avx512_core_vnni) || isa_includes(isa, dnnl::cpu_isa::avx2_vnni)
                 ? Precision::INT8
                 : Precision::FP32;
  }
  return Precision::FP32;
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

void* thread_buffer(ThreadBuffer slot, size_t bytes) {
  thread_local std::array<ScratchBuffer, kThreadBufferCount> buffers;
  return buffers[static_cast<size_t>(slot)].get(bytes);
}

Precision layer_precision(Precision requested, int64_t in_channels, int64_t out_channels) {
  if (requested == Precision::INT8 && std::min(in_channels, out_channels) < kMinInt8Channels)
    return layer_precision(Precision::BF16, in_channels, out_channels);
  const Precision runnable = runnable_precision(requested);
  if (runnable != requested) {
    static std::once_flag noted[3];
    std::call_once(noted[static_cast<size_t>(requested)], [&] {
      std::cerr << "lcmd: " << precision_name(requested) << " needs "
                << (requested == Precision::BF16 ? "AVX512-BF16" : "AVX512-VNNI or AVX-VNNI")
                << " (this CPU as oneDNN sees it: " << isa_name(dnnl::get_effective_cpu_isa()) << "); "
                << "running " << precision_name(runnable) << " instead\n";
    });
  }
  return runnable;
}

void note_layer_fallback(Precision requested, const std::string& layer) {
  static std::once_flag noted[3];
  std::call_once(noted[static_cast<size_t>(requested)], [&] {
    std::cerr << "lcmd: oneDNN has no fast " << precision_name(requested) << " kernel for " << layer
              << "; such layers run fp32\n";
  });
}

void sync_openmp_threads() {
  if (omp_in_parallel()) return;
  const int n = num_threads();
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
}

dnnl::memory wrap_memory(const dnnl::memory::desc& md, const void* data) {
  // oneDNN takes a void*; sources are only read.
  return dnnl::memory(md, cpu_engine(), const_cast<void*>(data));
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

ReorderStep make_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  dnnl::reorder::primitive_desc pd(cpu_engine(), from, cpu_engine(), to, user_scratchpad_attr());
  return ReorderStep{pd, dnnl::reorder(pd)};
}

void parallel_copy(float* dst, const float* src, int64_t n) {
  parallel_range(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    std::memcpy(dst + begin, src + begin, static_cast<size_t>(end - begin) * sizeof(float));
  });
}

}  // namespace detail
}  // namespace lcmd::ops
