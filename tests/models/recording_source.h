// A weight source for tests that hands out zero tensors and remembers every name and shape the
// module walk asked for.
#pragma once
#include <map>
#include <string>

#include "models/weights.h"

namespace lcmd::test {

class RecordingSource : public WeightSource {
 public:
  bool contains(const std::string&) const override { return true; }
  Tensor load(const std::string& name, const Shape& shape) const override {
    requested[name] = shape;
    return Tensor::zeros(shape);
  }
  std::string describe() const override { return "recorder"; }
  mutable std::map<std::string, Shape> requested;
};

}  // namespace lcmd::test
