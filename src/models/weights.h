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
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/ops.h"

namespace lcmd {

class SafetensorsFile;
class PackedModelFile;
class PackedModelWriter;

// A flat name -> tensor store. Implementations: a safetensors file, random PyTorch-like init.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  // The tensor as float32. Throws ModelError naming the file and tensor when missing or of
  // the wrong shape.
  virtual Tensor load(const std::string& name, const Shape& shape) const = 0;
  // A convolution or linear layer's weight, the parameters ops::Conv2d / ops::Linear pack. The
  // same values as load(); sources that treat matrices apart (a packer storing them in the
  // compute dtype) override it.
  virtual Tensor load_matrix(const std::string& name, const Shape& shape) const { return load(name, shape); }
  // A layer's weights stored already in a compute layout (a packed model), which the layer may
  // use in place; nullopt when the source has them only as values (then load_matrix).
  virtual std::optional<ops::StoredWeights> stored_layer(const std::string& name, const Shape& shape) const {
    return std::nullopt;
  }
  // Told a layer's weights in the layout it computes on, once built from load_matrix's values
  // (the packer stores them).
  virtual void layer_built(const std::string& name, const Shape& shape, const ops::StoredWeights& weights) const {}
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

// One component ("unet", ...) of a packed model file (io/packed_model.h): its tensors are named
// "<component>.<diffusers name>". The file must outlive the source.
class PackedSource : public WeightSource {
 public:
  PackedSource(const PackedModelFile& file, std::string component) : file_(file), prefix_(std::move(component) + ".") {}
  bool contains(const std::string& name) const override;
  // Plain tensors widened to float32 (their pages dropped after the copy); layers stored in a
  // compute layout are re-laid out to PyTorch's.
  Tensor load(const std::string& name, const Shape& shape) const override;
  // Layers stored in a compute layout, in place in the file's mapping.
  std::optional<ops::StoredWeights> stored_layer(const std::string& name, const Shape& shape) const override;
  std::string describe() const override;

 private:
  const PackedModelFile& file_;
  std::string prefix_;
};

// Passes every tensor through from another source and writes it into a packed model as
// "<component>.<name>": a layer's weights as the layer computes on them (layer_built; when
// `store_layouts`), else its values in `matrix_dtype`; every other parameter (norms, biases,
// embeddings) in float32, so packing keeps exact what the engine computes in float32.
class PackingSource : public WeightSource {
 public:
  PackingSource(const WeightSource& stored, PackedModelWriter& writer, std::string component, DType matrix_dtype,
                bool store_layouts)
      : stored_(stored),
        writer_(writer),
        prefix_(std::move(component) + "."),
        matrix_dtype_(matrix_dtype),
        store_layouts_(store_layouts) {}
  bool contains(const std::string& name) const override { return stored_.contains(name); }
  Tensor load(const std::string& name, const Shape& shape) const override;
  Tensor load_matrix(const std::string& name, const Shape& shape) const override;
  void layer_built(const std::string& name, const Shape& shape, const ops::StoredWeights& weights) const override;
  // Writes the matrices no layer_built call took (none when every layer reports back), then the
  // other parameters, all together: loading copies those (norms, biases, embeddings) out of the
  // file, and one contiguous run reads sequentially from a cold page cache instead of a thousand
  // scattered pages.
  void flush() const;
  std::string describe() const override { return stored_.describe(); }

 private:
  const WeightSource& stored_;
  PackedModelWriter& writer_;
  std::string prefix_;
  DType matrix_dtype_;
  bool store_layouts_;
  mutable std::map<std::string, Tensor> pending_;     // matrices loaded, their layer not built yet
  mutable std::map<std::string, Tensor> parameters_;  // everything else, until flush()
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
  explicit Weights(const WeightSource& source, Precision precision = Precision::FP32, std::string prefix = "",
                   ops::Conv3x3Algorithm conv3x3_algorithm = ops::Conv3x3Algorithm::kDirect)
      : source_(&source), precision_(precision), prefix_(std::move(prefix)), conv3x3_algorithm_(conv3x3_algorithm) {}
  Weights operator[](const std::string& child) const {
    return Weights(*source_, precision_, prefix_ + child + ".", conv3x3_algorithm_);
  }
  // This scope with its 3x3 convolutions' algorithm set (ops::Conv3x3Algorithm).
  Weights with_conv3x3_algorithm(ops::Conv3x3Algorithm algorithm) const {
    return Weights(*source_, precision_, prefix_, algorithm);
  }
  Weights operator[](int index) const { return (*this)[std::to_string(index)]; }
  Tensor tensor(const std::string& leaf, const Shape& shape) const { return source_->load(prefix_ + leaf, shape); }
  // A convolution's or linear layer's weight (see WeightSource::load_matrix, stored_layer and
  // layer_built).
  Tensor matrix(const std::string& leaf, const Shape& shape) const { return source_->load_matrix(prefix_ + leaf, shape); }
  std::optional<ops::StoredWeights> stored_layer(const std::string& leaf, const Shape& shape) const {
    return source_->stored_layer(prefix_ + leaf, shape);
  }
  void layer_built(const std::string& leaf, const Shape& shape, const ops::StoredWeights& weights) const {
    source_->layer_built(prefix_ + leaf, shape, weights);
  }
  bool has(const std::string& leaf) const { return source_->contains(prefix_ + leaf); }
  const std::string& prefix() const { return prefix_; }
  std::string describe() const { return source_->describe(); }  // e.g. the file, for messages
  Precision precision() const { return precision_; }
  ops::Conv3x3Algorithm conv3x3_algorithm() const { return conv3x3_algorithm_; }

 private:
  const WeightSource* source_;
  Precision precision_;
  std::string prefix_;
  ops::Conv3x3Algorithm conv3x3_algorithm_;
};

}  // namespace lcmd
