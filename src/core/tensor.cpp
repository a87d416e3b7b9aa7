#include "core/tensor.h"

#include <malloc.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <vector>

namespace lcmd {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// Large activations (a 128-channel 512x512 feature map is 134 MB) are recycled rather than
// mapped afresh. A fresh page costs a fault and its zeroing on first touch; on a VM that hands
// freed memory back to its host (free page reporting, as our Firecracker dev machine does) the
// host must fault it in again as well: 64 MB touched 2 s after it was freed took ~100 ms there,
// against ~6 ms for memory the process still held.
//
// Freed large blocks are kept as 2 MB chunks (a huge page each, where THP allows). A request
// takes a run of cached chunks that are already adjacent (a freed block of at least its size), or
// else a new address range into which mremap moves cached chunks: that moves page-table entries,
// so no page is copied, faulted or zeroed. Blocks freed at one size so serve the next size up (a
// decoder level's maps become the next level's), and the chunks held are at most the high-water
// mark of live large tensors, not a cache per size.
class LargeBlockPool {
 public:
  // Smaller blocks go to malloc. From 1 MB (not 4) the UNet's 32x32 activations recycle too:
  // ~12k fewer page faults per image, and a lower peak.
  static constexpr size_t kMinBytes = 1u << 20;
  static constexpr size_t kChunk = 2u << 20;     // block sizes are multiples of it
  static constexpr size_t kMaxCachedBytes = 512ull << 20;

  static LargeBlockPool& instance() {
    static LargeBlockPool* pool = new LargeBlockPool;  // never destroyed: tensors may outlive statics
    return *pool;
  }

  // A kChunk-aligned block of `bytes` (a multiple of kChunk), or nullptr when out of memory.
  void* take(size_t bytes) {
    const size_t chunks = bytes / kChunk;
    std::vector<uintptr_t> moving;
    moving.reserve(chunks);  // no allocation while chunks are out of the cache
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (const uintptr_t run = take_run(chunks)) return reinterpret_cast<void*>(run);
      while (moving.size() < chunks && !free_.empty()) moving.push_back(free_.extract(free_.begin()).value());
    }
    char* block = map_aligned(bytes);
    if (!block) {
      cache(moving);
      return nullptr;
    }
    for (size_t i = 0; i < moving.size(); ++i) {
      char* to = block + i * kChunk;
      if (mremap(reinterpret_cast<void*>(moving[i]), kChunk, kChunk, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED)
        continue;
      // The chunk is where it was, but the destination may have been unmapped already, and
      // another thread may have mapped something there since: that slot is left alone. The
      // chunks moved so far and those not moved go back to the cache, the fresh rest is unmapped.
      std::vector<uintptr_t> kept(moving.begin() + static_cast<std::ptrdiff_t>(i), moving.end());
      for (size_t j = 0; j < i; ++j) kept.push_back(reinterpret_cast<uintptr_t>(block + j * kChunk));
      munmap(to + kChunk, bytes - (i + 1) * kChunk);
      cache(kept);
      return nullptr;
    }
    return block;
  }

  void give_back(void* p, size_t bytes) {
    const auto begin = reinterpret_cast<uintptr_t>(p);
    uintptr_t kept_end = begin;
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      for (; kept_end < begin + bytes && (free_.size() + 1) * kChunk <= kMaxCachedBytes; kept_end += kChunk)
        free_.insert(kept_end);
    } catch (const std::bad_alloc&) {  // no room for the set's node: the rest is unmapped below
    }
    if (kept_end < begin + bytes) munmap(reinterpret_cast<void*>(kept_end), begin + bytes - kept_end);
  }

  void release_all() {
    std::set<uintptr_t> chunks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      chunks.swap(free_);
    }
    for (auto it = chunks.begin(); it != chunks.end();) {  // one munmap per adjacent run
      const uintptr_t first = *it;
      uintptr_t end = first + kChunk;
      for (++it; it != chunks.end() && *it == end; ++it) end += kChunk;
      munmap(reinterpret_cast<void*>(first), end - first);
    }
  }

 private:
  // Returns chunks to the cache (as give_back, one chunk at a time).
  void cache(const std::vector<uintptr_t>& chunks) {
    for (const uintptr_t chunk : chunks) give_back(reinterpret_cast<void*>(chunk), kChunk);
  }

  // The first run of `chunks` adjacent cached chunks, taken out of the cache; 0 if none.
  uintptr_t take_run(size_t chunks) {
    if (chunks == 0 || free_.size() < chunks) return 0;
    auto first = free_.begin();
    size_t length = 0;
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it != free_.begin() && *it == *std::prev(it) + kChunk) {
        ++length;
      } else {
        first = it;
        length = 1;
      }
      if (length == chunks) {
        const uintptr_t start = *first;
        free_.erase(first, std::next(it));
        return start;
      }
    }
    return 0;
  }

  // A new kChunk-aligned mapping of `bytes`, huge pages asked for.
  static char* map_aligned(size_t bytes) {
    void* raw = mmap(nullptr, bytes + kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const auto at = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t start = (at + kChunk - 1) & ~(uintptr_t{kChunk} - 1);
    if (start > at) munmap(raw, start - at);
    munmap(reinterpret_cast<void*>(start + bytes), kChunk - (start - at));  // the tail is never empty
    madvise(reinterpret_cast<void*>(start), bytes, MADV_HUGEPAGE);  // fewer faults and TLB misses where THP is "madvise"
    return reinterpret_cast<char*>(start);
  }

  std::mutex mutex_;
  std::set<uintptr_t> free_;  // cached chunks' addresses, each mapped and kChunk long
};

// A block mapped on its own, so freeing it returns the memory at once. glibc's malloc would
// serve blocks under its (adaptive, up to 32 MB) mmap threshold from the heap, where a freed
// weight copy stays resident as a hole between the packed weights allocated around it: loading
// the full-size model peaked ~250 MB above its steady size that way.
std::shared_ptr<float> map_floats(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return std::shared_ptr<float>(static_cast<float*>(p), [bytes](float* q) { munmap(q, bytes); });
}

constexpr size_t kMinMappedBytes = 1u << 20;

std::shared_ptr<float> allocate_floats(size_t count, bool pooled = true) {
  if (count > (SIZE_MAX - LargeBlockPool::kChunk) / sizeof(float)) throw std::bad_alloc();  // no size wraps below
  size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
  if (!pooled && bytes >= kMinMappedBytes) return map_floats(bytes);
  if (pooled && bytes >= LargeBlockPool::kMinBytes) {
    bytes = (bytes + LargeBlockPool::kChunk - 1) / LargeBlockPool::kChunk * LargeBlockPool::kChunk;
    void* p = LargeBlockPool::instance().take(bytes);
    if (!p) throw std::bad_alloc();
    return std::shared_ptr<float>(static_cast<float*>(p),
                                  [bytes](float* q) { LargeBlockPool::instance().give_back(q, bytes); });
  }
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
}

}  // namespace

void release_heap_memory() { malloc_trim(0); }

void release_cached_memory() {
  LargeBlockPool::instance().release_all();
  release_heap_memory();
}

Tensor::Tensor(Shape shape) : shape_(std::move(shape)) {
  for (int64_t d : shape_)
    if (d < 0) throw std::invalid_argument("negative tensor dimension in " + shape_str(shape_));
  storage_ = allocate_floats(static_cast<size_t>(numel()));
  data_ = storage_.get();
}

Tensor Tensor::transient(Shape shape) {
  Tensor t;
  t.shape_ = std::move(shape);
  for (int64_t d : t.shape_)
    if (d < 0) throw std::invalid_argument("negative tensor dimension in " + shape_str(t.shape_));
  t.storage_ = allocate_floats(static_cast<size_t>(t.numel()), /*pooled=*/false);
  t.data_ = t.storage_.get();
  return t;
}

Tensor Tensor::zeros(Shape shape) {
  Tensor t(std::move(shape));
  std::memset(t.data_, 0, static_cast<size_t>(t.numel()) * sizeof(float));
  return t;
}

Tensor Tensor::from(Shape shape, const float* values) {
  Tensor t(std::move(shape));
  std::memcpy(t.data_, values, static_cast<size_t>(t.numel()) * sizeof(float));
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    throw std::invalid_argument("reshape " + shape_str(shape_) + " -> " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const { return from(shape_, data_); }

Tensor to_nhwc(const Tensor& x) {
  if (x.rank() != 4) throw std::invalid_argument("to_nhwc needs a 4-D tensor, got " + shape_str(x.shape()));
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor y({n, h, w, c});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t p = 0; p < h * w; ++p) y.data()[(b * h * w + p) * c + ci] = x.data()[(b * c + ci) * h * w + p];
  return y;
}

Tensor to_nchw(const Tensor& x) {
  if (x.rank() != 4) throw std::invalid_argument("to_nchw needs a 4-D tensor, got " + shape_str(x.shape()));
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor y({n, c, h, w});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t p = 0; p < h * w; ++p) y.data()[(b * c + ci) * h * w + p] = x.data()[(b * h * w + p) * c + ci];
  return y;
}

}  // namespace lcmd
