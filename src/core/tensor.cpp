#include "core/tensor.h"

#include <malloc.h>
#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <cstring>
#include <new>
#include <stdexcept>

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

// Large activations (a 128-channel 512x512 feature map is 134 MB) would be fresh mmaps from glibc
// on every allocation, page-faulting on every first touch: ~10-30 % of a large op's time. They are
// recycled instead: freed large blocks wait in a size-keyed pool for the next tensor of that size
// class (the same shapes recur every denoising step and every image).
class LargeBlockPool {
 public:
  static constexpr size_t kMinBytes = 4u << 20;   // smaller blocks go to malloc
  static constexpr size_t kGranule = 2u << 20;    // huge-page sized classes
  static constexpr size_t kMaxCachedBytes = 512ull << 20;

  static LargeBlockPool& instance() {
    static LargeBlockPool* pool = new LargeBlockPool;  // never destroyed: tensors may outlive statics
    return *pool;
  }

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= bytes;
        return p;
      }
    }
    void* p = std::aligned_alloc(kGranule, bytes);
    if (p) madvise(p, bytes, MADV_HUGEPAGE);  // fewer faults and TLB misses where THP is "madvise"
    return p;
  }

  void release_all() {
    std::multimap<size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (auto& [bytes, p] : blocks) std::free(p);
  }

  void give_back(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxCachedBytes) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
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
  size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
  if (!pooled && bytes >= kMinMappedBytes) return map_floats(bytes);
  if (pooled && bytes >= LargeBlockPool::kMinBytes) {
    bytes = (bytes + LargeBlockPool::kGranule - 1) / LargeBlockPool::kGranule * LargeBlockPool::kGranule;
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

void release_cached_memory() {
  LargeBlockPool::instance().release_all();
  malloc_trim(0);
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
