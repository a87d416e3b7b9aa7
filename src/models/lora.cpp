#include "models/lora.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/model_folder.h"
#include "io/safetensors.h"

namespace lcmd {

namespace {

enum class Part { Down, Up, Alpha };

struct KeySuffix {
  const char* suffix;
  Part part;
};

// Every key style read, by the suffix after the module name.
constexpr KeySuffix kKeySuffixes[] = {
    {".lora_down.weight", Part::Down},  {".lora_up.weight", Part::Up},  // kohya
    {".alpha", Part::Alpha},
    {".lora_A.weight", Part::Down},     {".lora_B.weight", Part::Up},   // PEFT
    {".lora.down.weight", Part::Down},  {".lora.up.weight", Part::Up},  // diffusers
    {".lora_linear_layer.down.weight", Part::Down}, {".lora_linear_layer.up.weight", Part::Up},
};

bool split_key(const std::string& key, std::string* module, Part* part) {
  for (const KeySuffix& s : kKeySuffixes) {
    const std::string suffix = s.suffix;
    if (key.size() > suffix.size() && key.ends_with(suffix)) {
      *module = key.substr(0, key.size() - suffix.size());
      *part = s.part;
      return true;
    }
  }
  return false;
}

float read_alpha(const SafetensorsFile& file, const std::string& key) {
  const Tensor a = file.load_f32_as_stored(key);
  if (a.numel() != 1 || !std::isfinite(a.data()[0]))
    throw ModelError(file.path().string() + ": LoRA alpha '" + key + "' must be one finite number, got shape " +
                     shape_str(a.shape()));
  return a.data()[0];
}

void check_factors(const std::filesystem::path& path, LoraModule& m, bool has_down, bool has_up) {
  const std::string where = path.string() + ": LoRA module '" + m.key + "'";
  if (!has_down || !has_up) throw ModelError(where + " lacks its " + std::string(has_down ? "up" : "down") + " factor");
  if (m.down.rank() < 2 || m.up.rank() < 2)
    throw ModelError(where + " has factors of shapes " + shape_str(m.down.shape()) + " and " + shape_str(m.up.shape()) +
                     "; expected down [rank, in(, kh, kw)] and up [out, rank(, 1, 1)]");
  m.rank = static_cast<int>(m.down.dim(0));
  if (m.up.dim(1) != m.rank)
    throw ModelError(where + ": down " + shape_str(m.down.shape()) + " has rank " + std::to_string(m.rank) + " but up " +
                     shape_str(m.up.shape()) + " has " + std::to_string(m.up.dim(1)));
  for (int i = 2; i < m.up.rank(); ++i)
    if (m.up.dim(i) != 1) throw ModelError(where + ": up factor " + shape_str(m.up.shape()) + " must be 1x1");
}

LoraSet::File read_lora_file(const LoraSpec& spec) {
  refuse_pickle_file(spec.path);
  if (!std::isfinite(spec.scale)) throw InputError("LoRA scale of " + spec.path.string() + " must be a finite number");
  const SafetensorsFile file = SafetensorsFile::open(spec.path);
  LoraSet::File out{spec.path, static_cast<float>(spec.scale), {}};
  std::map<std::string, std::pair<bool, bool>> seen;  // module -> (down, up)
  std::vector<std::string> unknown;
  for (const TensorInfo& t : file.tensors()) {
    std::string module;
    Part part = Part::Down;
    if (!split_key(t.name, &module, &part)) {
      unknown.push_back(t.name);
      continue;
    }
    LoraModule& m = out.modules[module];
    m.key = module;
    if (part == Part::Down) {
      m.down = file.load_f32_as_stored(t.name);
      seen[module].first = true;
    } else if (part == Part::Up) {
      m.up = file.load_f32_as_stored(t.name);
      seen[module].second = true;
    } else {
      m.alpha = read_alpha(file, t.name);
      m.has_alpha = true;
    }
  }
  if (!unknown.empty())
    throw ModelError(spec.path.string() + ": " + std::to_string(unknown.size()) + " keys of an unsupported LoRA style, e.g. '" +
                     unknown.front() + "' (read: kohya lora_down/lora_up/alpha, PEFT lora_A/lora_B, diffusers lora.down/lora.up; "
                     "LyCORIS/LoHa/LoKr are not supported)");
  if (out.modules.empty()) throw ModelError(spec.path.string() + ": holds no LoRA modules");
  for (auto& [key, m] : out.modules) check_factors(spec.path, m, seen[key].first, seen[key].second);
  return out;
}

// W += scale * ((up * alpha) / rank) @ down, in diffusers' float32 order of operations.
void add_update(Tensor& w, const LoraModule& m, float scale, const std::string& where) {
  const int64_t out = w.dim(0), fan_in = w.numel() / out, rank = m.rank;
  bool fits = m.up.dim(0) == out && m.down.rank() == w.rank();
  for (int i = 1; fits && i < w.rank(); ++i) fits = m.down.dim(i) == w.dim(i);
  if (!fits)
    throw ModelError(where + ": LoRA factors down " + shape_str(m.down.shape()) + " and up " + shape_str(m.up.shape()) +
                     " do not fit the layer's weight " + shape_str(w.shape()));
  std::vector<float> up(static_cast<size_t>(out * rank));
  for (size_t i = 0; i < up.size(); ++i) up[i] = m.has_alpha ? m.up.data()[i] * m.alpha / static_cast<float>(rank) : m.up.data()[i];
  const float* down = m.down.data();
  float* dst = w.data();
#pragma omp parallel
  {
    // One output row of up @ down at a time, summed over the rank in order (as a dot product
    // would), with the down rows streamed contiguously.
    std::vector<float> product(static_cast<size_t>(fan_in));
#pragma omp for
    for (int64_t o = 0; o < out; ++o) {
      std::fill(product.begin(), product.end(), 0.0f);
      for (int64_t r = 0; r < rank; ++r) {
        const float u = up[o * rank + r];
        const float* d = down + r * fan_in;
        for (int64_t k = 0; k < fan_in; ++k) product[k] += u * d[k];
      }
      for (int64_t k = 0; k < fan_in; ++k) dst[o * fan_in + k] += scale * product[k];
    }
  }
  m.applied = true;
}

}  // namespace

std::string kohya_name(const std::string& kohya_prefix, const std::string& module_name) {
  std::string k = kohya_prefix + module_name;
  for (size_t i = kohya_prefix.size(); i < k.size(); ++i)
    if (k[i] == '.') k[i] = '_';
  return k;
}

std::shared_ptr<LoraSet> LoraSet::load(const std::vector<LoraSpec>& specs) {
  auto set = std::make_shared<LoraSet>();
  for (const LoraSpec& spec : specs) set->files_.push_back(read_lora_file(spec));
  return set;
}

void LoraSet::merge_into(Tensor& weight, const std::string& module_name, const std::string& kohya_prefix,
                         const std::string& diffusers_prefix) const {
  const std::string kohya = kohya_name(kohya_prefix, module_name), diffusers = diffusers_prefix + module_name;
  for (const File& f : files_) {
    auto it = f.modules.find(kohya);
    if (it == f.modules.end()) it = f.modules.find(diffusers);
    if (it == f.modules.end()) continue;
    add_update(weight, it->second, f.scale, f.path.string() + ": LoRA module '" + it->first + "' (layer '" + module_name + "')");
  }
}

bool LoraSet::targets(const std::string& module_name, const std::string& kohya_prefix,
                      const std::string& diffusers_prefix) const {
  const std::string kohya = kohya_name(kohya_prefix, module_name), diffusers = diffusers_prefix + module_name;
  for (const File& f : files_)
    if (f.modules.count(kohya) || f.modules.count(diffusers)) return true;
  return false;
}

void LoraSet::check_all_applied() const {
  for (const File& f : files_) {
    std::vector<std::string> unplaced;
    for (const auto& [key, m] : f.modules)
      if (!m.applied) unplaced.push_back(key);
    if (unplaced.empty()) continue;
    std::string list;
    for (size_t i = 0; i < unplaced.size() && i < 5; ++i) list += (i ? ", " : "") + unplaced[i];
    if (unplaced.size() > 5) list += ", ...";
    throw ModelError(f.path.string() + ": " + std::to_string(unplaced.size()) + " of " + std::to_string(f.modules.size()) +
                     " LoRA modules match no layer of this model: " + list +
                     " (is the LoRA for another architecture, e.g. SDXL, or in LDM-style kohya names?)");
  }
}

LoraMergingSource::LoraMergingSource(const WeightSource& base, std::shared_ptr<const LoraSet> loras, Component component)
    : base_(base),
      loras_(std::move(loras)),
      kohya_prefix_(component == Component::UNet ? "lora_unet_" : "lora_te_"),
      diffusers_prefix_(component == Component::UNet ? "unet." : "text_encoder.") {}

Tensor LoraMergingSource::load(const std::string& name, const Shape& shape) const {
  Tensor t = base_.load(name, shape);
  static const std::string weight = ".weight";
  if (shape.size() >= 2 && name.ends_with(weight))
    loras_->merge_into(t, name.substr(0, name.size() - weight.size()), kohya_prefix_, diffusers_prefix_);
  return t;
}

std::optional<ops::StoredWeights> LoraMergingSource::stored_layer(const std::string& name, const Shape& shape) const {
  static const std::string weight = ".weight";
  if (name.ends_with(weight) &&
      loras_->targets(name.substr(0, name.size() - weight.size()), kohya_prefix_, diffusers_prefix_))
    return std::nullopt;
  return base_.stored_layer(name, shape);
}

std::string describe_loras(const std::vector<LoraSpec>& specs) {
  std::ostringstream os;
  for (const LoraSpec& spec : specs) {
    const LoraSet::File f = read_lora_file(spec);
    std::set<int> ranks;
    std::set<float> alphas;
    size_t unet = 0, text = 0;
    for (const auto& [key, m] : f.modules) {
      ranks.insert(m.rank);
      alphas.insert(m.has_alpha ? m.alpha : static_cast<float>(m.rank));
      unet += key.starts_with("lora_unet_") || key.starts_with("unet.");
      text += key.starts_with("lora_te_") || key.starts_with("text_encoder.");
    }
    os << "lora: " << spec.path.string() << " (scale " << spec.scale << ")\n  modules: " << f.modules.size() << " (unet "
       << unet << ", text encoder " << text << "), rank";
    for (int r : ranks) os << " " << r;
    os << ", alpha";
    for (float a : alphas) os << " " << a;
    os << "\n";
  }
  return os.str();
}

}  // namespace lcmd
