// A float32 tensor: a shape and a 64-byte aligned buffer shared between views.
//
// Layout conventions (the whole engine uses them):
//   images / feature maps: NHWC  [N, H, W, C]   (channels last, what oneDNN's brgconv wants)
//   token sequences:       [N, T, C]
//   weights keep their PyTorch layout until an op packs them.
// Reference data (.npy) is NCHW; convert with to_nhwc / to_nchw at the boundary.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace lcmd {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised storage of shape_numel(shape) floats.
  explicit Tensor(Shape shape);
  static Tensor zeros(Shape shape);
  // Storage that bypasses the recycled-block pool and goes back to the system when freed: for
  // one-off buffers such as a weight's float32 copy before it is packed.
  static Tensor transient(Shape shape);
  static Tensor from(Shape shape, const float* values);  // copies

  float* data() { return data_; }
  const float* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int64_t numel() const { return shape_numel(shape_); }
  bool empty() const { return data_ == nullptr; }
  // True when no other tensor (a copy, a reshape) shares this one's storage: an op may then
  // write its result into that storage (see Conv2d and Linear's residual overloads).
  bool sole_owner() const { return storage_ && storage_.use_count() == 1; }

  // Same storage, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  Tensor clone() const;

 private:
  std::shared_ptr<float> storage_;
  float* data_ = nullptr;
  Shape shape_;
};

// Returns the memory of freed tensors to the system: the recycled large blocks and glibc's free
// heap. Called after loading a model, whose temporary float32 copies of the weights would
// otherwise stay resident.
void release_cached_memory();
// Returns glibc's free heap (freed tensors under 1 MB) to the system, but keeps the recycled
// large blocks: the next large tensors reuse them whatever their size, so the pool never holds
// more than the high-water mark of live large tensors, and between the stages of an image
// (where this is called) keeping them spares the next stage fresh pages (see tensor.cpp).
void release_heap_memory();

// NCHW <-> NHWC copies for 4-D tensors.
Tensor to_nhwc(const Tensor& nchw);
Tensor to_nchw(const Tensor& nhwc);

}  // namespace lcmd
