#include "models/weights.h"

#include <cmath>
#include <functional>

#include "core/error.h"
#include "io/packed_model.h"
#include "io/safetensors.h"

namespace lcmd {

SafetensorsSource::SafetensorsSource(const std::filesystem::path& path)
    : file_(std::make_unique<SafetensorsFile>(SafetensorsFile::open(path))) {}
SafetensorsSource::~SafetensorsSource() = default;

bool SafetensorsSource::contains(const std::string& name) const { return file_->contains(name); }
Tensor SafetensorsSource::load(const std::string& name, const Shape& shape) const {
  Tensor t = file_->load_f32(name, shape);
  file_->release(file_->info(name));  // each tensor is read once: keep only the engine's copy resident
  return t;
}
std::string SafetensorsSource::describe() const { return file_->path().string(); }

bool PackedSource::contains(const std::string& name) const { return file_.find(prefix_ + name) != nullptr; }

Tensor PackedSource::load(const std::string& name, const Shape& shape) const {
  if (const auto stored = stored_layer(name, shape)) {
    try {
      return ops::unpack_stored_weights(*stored, shape);
    } catch (const std::invalid_argument& e) {
      throw ModelError(file_.path().string() + ": tensor '" + prefix_ + name + "': " + e.what());
    }
  }
  Tensor t = file_.load_f32(prefix_ + name, shape);
  file_.release(*file_.find(prefix_ + name));  // read once: keep only the engine's copy resident
  return t;
}

std::optional<ops::StoredWeights> PackedSource::stored_layer(const std::string& name, const Shape& shape) const {
  const PackedTensor* t = file_.find(prefix_ + name);
  if (!t || t->layout != kBlockedLayout) return std::nullopt;
  if (t->shape != shape)
    throw ModelError(file_.path().string() + ": tensor '" + t->name + "' has shape " + shape_str(t->shape) + ", expected " +
                     shape_str(shape));
  return ops::StoredWeights{t->blocking, file_.data(*t), t->size};
}

std::string PackedSource::describe() const { return file_.path().string(); }

Tensor PackingSource::load(const std::string& name, const Shape& shape) const {
  Tensor t = stored_.load(name, shape);
  parameters_.insert_or_assign(name, t);  // written together by flush()
  return t;
}

Tensor PackingSource::load_matrix(const std::string& name, const Shape& shape) const {
  Tensor t = stored_.load_matrix(name, shape);
  pending_.insert_or_assign(name, t);
  return t;
}

void PackingSource::layer_built(const std::string& name, const Shape& shape, const ops::StoredWeights& weights) const {
  auto it = pending_.find(name);
  if (it == pending_.end() || writer_.has_tensor(prefix_ + name)) return;
  if (store_layouts_ && !weights.layout.empty()) {
    const bool bf16 = weights.layout.find("\"data_type\":\"bf16\"") != std::string::npos;
    writer_.add_blocked(prefix_ + name, shape, bf16 ? DType::BF16 : DType::F32, weights.layout, weights.data, weights.size);
  } else {
    writer_.add_tensor(prefix_ + name, shape, it->second.data(), matrix_dtype_);
  }
  pending_.erase(it);
}

void PackingSource::flush() const {
  for (const auto& [name, t] : pending_)
    if (!writer_.has_tensor(prefix_ + name)) writer_.add_tensor(prefix_ + name, t.shape(), t.data(), matrix_dtype_);
  pending_.clear();
  for (const auto& [name, t] : parameters_)
    if (!writer_.has_tensor(prefix_ + name)) writer_.add_tensor(prefix_ + name, t.shape(), t.data(), DType::F32);
  parameters_.clear();
}

bool RenamingSource::contains(const std::string& name) const { return stored_.contains(rename_(name).name); }

Tensor RenamingSource::load(const std::string& name, const Shape& shape) const {
  const RenamedTensor stored = rename_(name);
  if (!stored_.contains(stored.name))
    throw ModelError(stored_.describe() + ": tensor '" + stored.name + "' is missing (the model's '" + name + "')");
  if (stored.stored_as_conv1x1 && shape.size() == 2)
    return stored_.load(stored.name, {shape[0], shape[1], 1, 1}).reshape(shape);
  return stored_.load(stored.name, shape);
}

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double uniform01(uint64_t& state) { return (splitmix64(state) >> 11) * 0x1.0p-53; }

std::string module_name(const std::string& name) {  // "a.b.norm1.weight" -> "norm1"
  const size_t leaf = name.rfind('.');
  if (leaf == std::string::npos) return "";
  const size_t start = name.rfind('.', leaf - 1);
  return name.substr(start == std::string::npos ? 0 : start + 1, leaf - (start == std::string::npos ? 0 : start + 1));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Tensor RandomSource::load(const std::string& name, const Shape& shape) const {
  requested_.push_back({name, shape});
  shapes_[name] = shape;
  return generate(name, shape);
}

Tensor RandomSource::generate(const std::string& name, const Shape& shape) const {
  Tensor t = Tensor::transient(shape);
  float* v = t.data();
  const int64_t n = t.numel();
  uint64_t state = seed_ ^ std::hash<std::string>{}(name);
  const std::string module = module_name(name);
  const bool is_bias = ends_with(name, ".bias");
  if (module.find("norm") != std::string::npos) {  // GroupNorm / LayerNorm
    for (int64_t i = 0; i < n; ++i) v[i] = is_bias ? 0.0f : 1.0f;
  } else if (ends_with(module, "embedding")) {  // nn.Embedding as CLIP initialises it
    for (int64_t i = 0; i < n; i += 2) {
      const double r = std::sqrt(-2.0 * std::log(1.0 - uniform01(state))), th = 2 * M_PI * uniform01(state);
      v[i] = static_cast<float>(0.02 * r * std::cos(th));
      if (i + 1 < n) v[i + 1] = static_cast<float>(0.02 * r * std::sin(th));
    }
  } else {  // Linear / Conv2d: weight and bias uniform in +-1/sqrt(fan_in)
    Shape weight_shape = shape;
    if (is_bias) {
      auto it = shapes_.find(name.substr(0, name.size() - 4) + "weight");
      weight_shape = it != shapes_.end() ? it->second : Shape{shape[0], 1};
    }
    int64_t fan_in = 1;
    for (size_t i = 1; i < weight_shape.size(); ++i) fan_in *= weight_shape[i];
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>((2 * uniform01(state) - 1) * bound);
  }
  return t;
}

}  // namespace lcmd
