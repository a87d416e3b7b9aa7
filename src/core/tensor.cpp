#include "core/tensor.h"

#include <cstdlib>
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

Tensor::Tensor(Shape shape) : shape_(std::move(shape)) {
  for (int64_t d : shape_)
    if (d < 0) throw std::invalid_argument("negative tensor dimension in " + shape_str(shape_));
  const size_t bytes = (static_cast<size_t>(numel()) * sizeof(float) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p) throw std::bad_alloc();
  storage_ = std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
  data_ = storage_.get();
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
