// Where model code gets its parameters. Loading is a walk over the module tree: each module
// asks its own scope for its tensors by their diffusers names, so
//   unet["down_blocks"][1]["attentions"][0]...["to_k"].tensor("weight", {C, C})
// reads `down_blocks.1.attentions.0....to_k.weight`, checking the shape the config implies.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace lcmd {

class SafetensorsFile;

// A flat name -> tensor store. Implementations: a safetensors file, random PyTorch-like init.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  // The tensor as float32. Throws ModelError naming the file and tensor when missing or of
  // the wrong shape.
  virtual Tensor load(const std::string& name, const Shape& shape) const = 0;
  virtual std::string describe() const = 0;  // e.g. the file path, for messages
};

class SafetensorsSource : public WeightSource {
 public:
  explicit SafetensorsSource(const std::filesystem::path& path);
  ~SafetensorsSource() override;
  bool contains(const std::string& name) const override;
  Tensor load(const std::string& name, const Shape& shape) const override;
  std::string describe() const override;
  const SafetensorsFile& file() const { return *file_; }

 private:
  std::unique_ptr<SafetensorsFile> file_;
};

// Where a tensor the model asks for by its diffusers name is stored in another naming scheme.
struct RenamedTensor {
  std::string name;
  // Stored as a 1x1 convolution [out, in, 1, 1] where the model wants a linear [out, in] (the
  // LDM VAE's mid-block attention): same values, the trailing 1x1 is dropped.
  bool stored_as_conv1x1 = false;
};

// A source that serves diffusers names from a source with other names (e.g. the CompVis/LDM
// names of single-file checkpoints): every model walk stays the same, only the names differ.
class RenamingSource : public WeightSource {
 public:
  using Rename = std::function<RenamedTensor(const std::string& diffusers_name)>;
  RenamingSource(const WeightSource& stored, Rename rename) : stored_(stored), rename_(std::move(rename)) {}
  bool contains(const std::string& name) const override;
  // ModelError naming both the stored and the diffusers name when the tensor is missing.
  Tensor load(const std::string& name, const Shape& shape) const override;
  std::string describe() const override { return stored_.describe(); }

 private:
  const WeightSource& stored_;
  Rename rename_;
};

// Random parameters with PyTorch's default initialisation, so a full-size model can run and be
// benchmarked without a download: Linear/Conv weight and bias uniform in +-1/sqrt(fan_in),
// embeddings normal(0, 0.02), norms weight 1 bias 0. Values depend only on (seed, name), so the
// same tensor can be regenerated later without keeping it; every request is recorded.
class RandomSource : public WeightSource {
 public:
  explicit RandomSource(uint64_t seed = 0) : seed_(seed) {}
  bool contains(const std::string& name) const override { return true; }
  // Records the request, then generates.
  Tensor load(const std::string& name, const Shape& shape) const override;
  std::string describe() const override { return "random weights"; }
  // The values load() gives for this tensor, again (a bias needs its weight loaded first: the
  // bound comes from the weight's fan_in).
  Tensor generate(const std::string& name, const Shape& shape) const;

  struct Record { std::string name; Shape shape; };
  // Every tensor requested so far, in request order.
  const std::vector<Record>& requested() const { return requested_; }

 private:
  uint64_t seed_;
  mutable std::vector<Record> requested_;
  mutable std::map<std::string, Shape> shapes_;  // to find a bias's sibling weight (fan_in)
};

// A scope in the module tree: a source, a name prefix, and the precision the scope's
// convolutions and matrix products compute in (inherited by child scopes).
class Weights {
 public:
  explicit Weights(const WeightSource& source, Precision precision = Precision::FP32, std::string prefix = "")
      : source_(&source), precision_(precision), prefix_(std::move(prefix)) {}
  Weights operator[](const std::string& child) const { return Weights(*source_, precision_, prefix_ + child + "."); }
  Weights operator[](int index) const { return (*this)[std::to_string(index)]; }
  Tensor tensor(const std::string& leaf, const Shape& shape) const { return source_->load(prefix_ + leaf, shape); }
  bool has(const std::string& leaf) const { return source_->contains(prefix_ + leaf); }
  const std::string& prefix() const { return prefix_; }
  Precision precision() const { return precision_; }

 private:
  const WeightSource* source_;
  Precision precision_;
  std::string prefix_;
};

}  // namespace lcmd
