// Multi-head attention softmax(q k^T / sqrt(d)) v as one fused flash-attention pass: scores
// never leave the L1 cache (see attention_kernels.h for the tile kernels and their layouts).
//
// This file checks shapes, picks the kernel for the CPU, and spreads the tasks — (batch, head,
// tile of queries) — over the threads in a single OpenMP parallel region without barriers: on
// a loaded machine every fork/join or barrier can wait a scheduler time slice for a preempted
// thread. Each thread owns a contiguous run of tasks and, when done, takes tasks from the runs
// of the others, so a thread that lost its core for a while does not hold up the call.
//
// K and V: fp32 kernels read them in place from the tensors; bf16 kernels (and fp32 ones for a
// head dim that needs padding) read them packed per head, either from a PackedKV or packed by
// each thread, once per head it meets, into a buffer of its own.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/attention_kernels.h"
#include "ops/ops.h"
#include "ops/work_counter.h"

namespace lcmd::ops {

namespace detail {

int64_t AttentionGeometry::key_slots(int64_t keys) const { return keys * (bf16 ? (head_dim + 1) / 2 : head_dim); }

int64_t AttentionGeometry::value_slots(int64_t keys) const { return (bf16 ? (keys + 1) / 2 : keys) * padded_dim; }

int64_t AttentionGeometry::scratch_floats() const {
  auto round_up16 = [](int64_t n) { return (n + 15) / 16 * 16; };
  // Per sub-tile Q^T, O^T, running max and sum; one block of scores and its bf16 pairs.
  return subtiles * (round_up16(head_dim * tile_queries) + padded_dim * tile_queries + 2 * tile_queries) +
         block_keys * tile_queries + block_keys / 2 * tile_queries;
}

namespace {

// 64-byte aligned storage of 32-bit slots (floats or bf16 pairs).
class AlignedSlots {
 public:
  AlignedSlots() = default;
  explicit AlignedSlots(int64_t n) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * 4 + 63) / 64 * 64;
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!data_) throw std::bad_alloc();
  }
  float* get() const { return data_.get(); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
};

// The HeadKV of one head packed at `base` (key slots first).
HeadKV packed_head(const AttentionGeometry& g, const float* base, int64_t keys) {
  HeadKV head;
  head.k = base;
  head.v = base + g.key_slots(keys);
  head.k_stride = g.bf16 ? (g.head_dim + 1) / 2 : g.head_dim;
  head.v_stride = g.padded_dim;
  head.keys = keys;
  return head;
}

int64_t packed_head_slots(const AttentionGeometry& g, int64_t keys) {
  return (g.key_slots(keys) + g.value_slots(keys) + 15) / 16 * 16;
}

}  // namespace

void pack_fp32_head(const AttentionGeometry& g, const float* k, const float* v, int64_t stride, int64_t keys,
                    void* k_dst, void* v_dst) {
  const int64_t d = g.head_dim, dp = g.padded_dim;
  float* k_out = static_cast<float*>(k_dst);
  float* v_out = static_cast<float*>(v_dst);
  for (int64_t j = 0; j < keys; ++j) {
    std::memcpy(k_out + j * d, k + j * stride, sizeof(float) * d);
    std::memcpy(v_out + j * dp, v + j * stride, sizeof(float) * d);
    std::fill(v_out + j * dp + d, v_out + (j + 1) * dp, 0.f);
  }
}

// K and V of every (batch, head), packed for one kernel.
struct PackedKVData {
  const AttentionKernel* kernel = nullptr;
  AttentionGeometry geometry;
  int64_t batch = 0, keys = 0, channels = 0;
  int heads = 0;
  int64_t head_slots = 0;  // K then V of one head
  AlignedSlots storage;

  HeadKV head(int64_t batch_head) const { return packed_head(geometry, storage.get() + batch_head * head_slots, keys); }
};

namespace {

void check_kv(const Tensor& k, const Tensor& v, int heads) {
  const std::string shapes = "k " + shape_str(k.shape()) + ", v " + shape_str(v.shape());
  if (k.rank() != 3 || v.rank() != 3 || k.shape() != v.shape())
    throw std::invalid_argument("attention: k and v must both be [B, Sk, H*d] of the same shape; got " + shapes);
  if (heads <= 0 || k.dim(2) == 0 || k.dim(2) % heads != 0)
    throw std::invalid_argument("attention: " + std::to_string(k.dim(2)) + " channels cannot be split into " +
                                std::to_string(heads) + " heads (" + shapes + ")");
}

void check_q(const Tensor& q, int64_t batch, int64_t keys, int64_t channels, const std::string& kv_shapes) {
  const std::string shapes = "q " + shape_str(q.shape()) + ", " + kv_shapes;
  if (q.rank() != 3) throw std::invalid_argument("attention: q must be [B, Sq, H*d]; got " + shapes);
  if (q.dim(0) != batch || q.dim(2) != channels)
    throw std::invalid_argument("attention: q [B, Sq, C] needs k and v of shape [B, Sk, C]; got " + shapes);
  if (keys == 0 && q.dim(1) > 0) throw std::invalid_argument("attention: no keys (" + shapes + ")");
}

// Contiguous, nearly equal runs of tasks, one per thread slot. A thread claims tasks from its
// own run first, then from the others' (the team may also be smaller than the slots).
class TaskRuns {
 public:
  TaskRuns(int64_t tasks, int slots) : runs_(new Run[slots]), slots_(slots) {
    for (int s = 0; s < slots; ++s) {
      runs_[s].next.store(tasks * s / slots, std::memory_order_relaxed);
      runs_[s].end = tasks * (s + 1) / slots;
    }
  }
  // The next unclaimed task, or -1 when all are claimed.
  int64_t claim(int slot) {
    for (int i = 0; i < slots_; ++i) {
      Run& run = runs_[(slot + i) % slots_];
      if (run.next.load(std::memory_order_relaxed) >= run.end) continue;
      const int64_t task = run.next.fetch_add(1, std::memory_order_relaxed);
      if (task < run.end) return task;
    }
    return -1;
  }

 private:
  struct alignas(64) Run {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  std::unique_ptr<Run[]> runs_;
  int slots_;
};

// Where the tasks get K and V: a PackedKV, or the k and v tensors (read in place by fp32
// kernels when V needs no padding, otherwise packed head by head by each thread).
struct KVSource {
  const PackedKVData* packed = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t keys = 0;
};

// Sub-tiles per task: as many as fit the cache, but enough tasks to balance the threads.
int choose_subtiles(const AttentionGeometry& g, int64_t batch_heads, int64_t queries, int threads) {
  const int64_t min_tasks = 8 * static_cast<int64_t>(threads);
  int subtiles = g.max_subtiles;
  auto tasks = [&](int s) { return batch_heads * ((queries + s * g.tile_queries - 1) / (s * g.tile_queries)); };
  while (subtiles > 1 && tasks(subtiles) < min_tasks) --subtiles;
  return subtiles;
}

// Storage of the calling thread kept from call to call; it only grows. (Fresh per-call
// buffers of a few hundred KB would come from mmap and page-fault on every call.)
class ThreadBuffer {
 public:
  float* get(int64_t slots) {
    if (slots > size_) {
      data_ = AlignedSlots(slots);
      size_ = slots;
    }
    return data_.get();
  }

 private:
  AlignedSlots data_;
  int64_t size_ = 0;
};

thread_local ThreadBuffer t_scratch, t_packed_heads;

// The heads of one batch item whose packed K and V a thread keeps (one head, or all of them).
class HeadCache {
 public:
  HeadCache(const AttentionKernel& kernel, const AttentionGeometry& g, int64_t keys, int slots)
      : kernel_(kernel),
        g_(g),
        keys_(keys),
        slot_size_(packed_head_slots(g, keys)),
        buffer_(t_packed_heads.get(slots * slot_size_)),
        owner_(slots, -1) {}

  HeadKV get(int slot, int64_t batch_head, const float* k, const float* v, int64_t stride) {
    float* base = buffer_ + slot * slot_size_;
    if (owner_[slot] != batch_head) {
      kernel_.pack_head(g_, k, v, stride, keys_, base, base + g_.key_slots(keys_));
      owner_[slot] = batch_head;
    }
    return packed_head(g_, base, keys_);
  }

 private:
  const AttentionKernel& kernel_;
  const AttentionGeometry& g_;
  int64_t keys_, slot_size_;
  float* buffer_;
  std::vector<int64_t> owner_;
};

// How task numbers map to (batch, head, query tile). Tile-major runs all heads of a query tile
// in turn, so the tile's q and output rows are read and written whole; head-major runs all
// tiles of one head, so its K and V stay cached.
struct TaskOrder {
  int64_t heads, tiles;
  bool tile_major;

  void decode(int64_t task, int64_t& batch, int64_t& head, int64_t& tile) const {
    batch = task / (heads * tiles);
    const int64_t rest = task % (heads * tiles);
    head = tile_major ? rest % heads : rest / tiles;
    tile = tile_major ? rest / heads : rest % tiles;
  }
};

Tensor run_attention(const AttentionKernel& kernel, AttentionGeometry g, const Tensor& q, const KVSource& kv, int heads,
                     bool causal, int subtiles = 0) {
  const int64_t batch = q.dim(0), queries = q.dim(1), channels = q.dim(2), d = g.head_dim;
  Tensor out(q.shape());
  if (out.numel() == 0) return out;
  const int threads = num_threads();
  g.subtiles = subtiles > 0 ? std::min(subtiles, g.max_subtiles) : choose_subtiles(g, batch * heads, queries, threads);
  const int64_t task_queries = static_cast<int64_t>(g.subtiles) * g.tile_queries;
  // Tile-major when the K and V of all heads fit in L2.
  const TaskOrder order{heads, (queries + task_queries - 1) / task_queries, kv.keys * channels * 2 * 4 <= 512 * 1024};
  const int64_t tasks = batch * heads * order.tiles;
  const bool in_place = !kv.packed && !g.bf16 && g.padded_dim == d;
  const int team = static_cast<int>(std::min<int64_t>(threads, tasks));
  TaskRuns runs(tasks, team);
  std::exception_ptr failure;
#pragma omp parallel num_threads(team)
  {
    try {
      float* scratch = t_scratch.get(g.scratch_floats());
      std::unique_ptr<HeadCache> cache;
      if (!kv.packed && !in_place)
        cache = std::make_unique<HeadCache>(kernel, g, kv.keys, order.tile_major ? heads : 1);
      for (int64_t task; (task = runs.claim(omp_get_thread_num())) >= 0;) {
        int64_t b, h, tile_index;
        order.decode(task, b, h, tile_index);
        const int64_t bh = b * heads + h, kv_offset = b * kv.keys * channels + h * d;
        HeadKV head;
        if (kv.packed) {
          head = kv.packed->head(bh);
        } else if (in_place) {
          head = {kv.k + kv_offset, kv.v + kv_offset, channels, channels, kv.keys};
        } else {
          const int slot = order.tile_major ? static_cast<int>(h) : 0;
          head = cache->get(slot, bh, kv.k + kv_offset, kv.v + kv_offset, channels);
        }
        QueryTile tile;
        tile.first = tile_index * task_queries;
        tile.rows = std::min(task_queries, queries - tile.first);
        tile.q = q.data() + (b * queries + tile.first) * channels + h * d;
        tile.out = out.data() + (b * queries + tile.first) * channels + h * d;
        tile.stride = channels;
        tile.causal = causal;
        kernel.run_tile(g, head, tile, scratch);
      }
    } catch (...) {
      // Only the allocations above throw, before this thread claimed anything; the other
      // threads take over its tasks.
#pragma omp critical(lcmd_attention_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  // Q K^T and P V at the nominal size (a causal mask skips about half, but is counted whole).
  count_macs(static_cast<uint64_t>(2 * batch * queries * kv.keys * channels));
  return out;
}

bool cpu_has_avx512() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

}  // namespace

std::vector<const AttentionKernel*> runnable_attention_kernels() {
  std::vector<const AttentionKernel*> kernels;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (cpu_has_avx512() && __builtin_cpu_supports("avx512bf16")) kernels.push_back(&avx512_bf16_attention_kernel());
  if (cpu_has_avx512()) kernels.push_back(&avx512_attention_kernel());
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) kernels.push_back(&avx2_attention_kernel());
#endif
  kernels.push_back(&portable_attention_kernel());
  return kernels;
}

const AttentionKernel& best_attention_kernel(bool bf16) {
  static const std::vector<const AttentionKernel*> kernels = runnable_attention_kernels();
  for (const AttentionKernel* kernel : kernels)
    if (kernel->bf16 == bf16) return *kernel;
  return best_attention_kernel(false);  // no bf16 kernel on this CPU
}

PackedKV pack_kv_with(const AttentionKernel& kernel, const Tensor& k, const Tensor& v, int heads) {
  check_kv(k, v, heads);
  auto data = std::make_shared<PackedKVData>();
  data->kernel = &kernel;
  data->batch = k.dim(0);
  data->keys = k.dim(1);
  data->channels = k.dim(2);
  data->heads = heads;
  data->geometry = kernel.geometry(data->channels / heads);
  const AttentionGeometry& g = data->geometry;
  data->head_slots = packed_head_slots(g, data->keys);
  const int64_t head_count = data->batch * heads;
  data->storage = AlignedSlots(head_count * data->head_slots);
  const int64_t key_slots = g.key_slots(data->keys), d = g.head_dim, keys = data->keys, channels = data->channels;
  // Work items of up to kChunkKeys keys of one head, so that one big head (the VAE's) is
  // packed by all threads. Chunks start at even keys: bf16 V pairs never straddle two.
  constexpr int64_t kChunkKeys = 512;
  const int64_t chunks = std::max<int64_t>(1, (keys + kChunkKeys - 1) / kChunkKeys), items = head_count * chunks;
  const int team = static_cast<int>(std::clamp<int64_t>(num_threads(), 1, items));
#pragma omp parallel for num_threads(team) schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t bh = item / chunks, first = item % chunks * kChunkKeys, count = std::min(kChunkKeys, keys - first);
    const int64_t offset = bh / heads * keys * channels + bh % heads * d + first * channels;
    float* dst = data->storage.get() + bh * data->head_slots;
    kernel.pack_head(g, k.data() + offset, v.data() + offset, channels, count, dst + g.key_slots(first),
                     dst + key_slots + g.value_slots(first));
  }
  return PackedKV(std::move(data));
}

Tensor attention_with(const AttentionKernel& kernel, const Tensor& q, const Tensor& k, const Tensor& v, int heads,
                      bool causal, int subtiles) {
  check_kv(k, v, heads);
  check_q(q, k.dim(0), k.dim(1), k.dim(2), "k " + shape_str(k.shape()) + ", v " + shape_str(v.shape()));
  const AttentionGeometry g = kernel.geometry(q.dim(2) / heads);
  const bool needs_packing = g.bf16 || g.padded_dim != g.head_dim;
  if (needs_packing && q.numel() > 0 && k.dim(0) * heads < num_threads()) {
    // Fewer heads than threads: each thread would pack (and cache) its own copy of the same
    // head. Pack them once, with all threads, instead.
    const PackedKV packed = pack_kv_with(kernel, k, v, heads);
    KVSource source;
    source.packed = packed.data();
    source.keys = k.dim(1);
    return run_attention(kernel, g, q, source, heads, causal, subtiles);
  }
  KVSource source;
  source.k = k.data();
  source.v = v.data();
  source.keys = k.dim(1);
  return run_attention(kernel, g, q, source, heads, causal, subtiles);
}

}  // namespace detail

PackedKV::PackedKV(const Tensor& k, const Tensor& v, int heads, AttentionPrecision precision)
    : PackedKV(
          detail::pack_kv_with(detail::best_attention_kernel(precision == AttentionPrecision::BF16), k, v, heads)) {}

PackedKV::PackedKV(std::shared_ptr<const detail::PackedKVData> data) : data_(std::move(data)) {}

int64_t PackedKV::batch() const { return data_ ? data_->batch : 0; }
int64_t PackedKV::keys() const { return data_ ? data_->keys : 0; }
int64_t PackedKV::channels() const { return data_ ? data_->channels : 0; }
int PackedKV::heads() const { return data_ ? data_->heads : 0; }
const char* PackedKV::kernel_name() const { return data_ ? data_->kernel->name : ""; }

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  return attention(q, k, v, heads, causal, AttentionPrecision::FP32);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal,
                 AttentionPrecision precision) {
  return detail::attention_with(detail::best_attention_kernel(precision == AttentionPrecision::BF16), q, k, v, heads,
                                causal);
}

Tensor attention(const Tensor& q, const PackedKV& kv, bool causal) {
  if (kv.empty()) throw std::invalid_argument("attention: the PackedKV is empty (default-constructed)");
  const detail::PackedKVData& data = *kv.data();
  detail::check_q(q, data.batch, data.keys, data.channels,
                  "packed k/v [" + std::to_string(data.batch) + ", " + std::to_string(data.keys) + ", " +
                      std::to_string(data.channels) + "]");
  detail::KVSource source;
  source.packed = &data;
  source.keys = data.keys;
  return detail::run_attention(*data.kernel, data.geometry, q, source, data.heads, causal);
}

const char* attention_kernel_name(AttentionPrecision precision) {
  return detail::best_attention_kernel(precision == AttentionPrecision::BF16).name;
}

}  // namespace lcmd::ops
