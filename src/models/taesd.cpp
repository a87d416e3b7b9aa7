#include "models/taesd.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/blocks.h"

namespace lcmd {

using nlohmann::json;

namespace {

// Typed reads of AutoencoderTiny config fields, with ModelErrors that name the source and field.
class ConfigFields {
 public:
  ConfigFields(const json& j, const std::string& source) : j_(j), source_(source) {
    if (!j.is_object()) fail("", "must be a JSON object, got " + j.dump());
  }
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw ModelError(source_ + (field.empty() ? "" : ": field '" + field + "'") + " " + what);
  }
  bool present(const std::string& f) const { return j_.contains(f) && !j_.at(f).is_null(); }

  int integer(const std::string& f, int def, int lo, int hi) const {
    if (!present(f)) return def;
    const json& v = j_.at(f);
    if (!v.is_number_integer()) fail(f, "must be an integer, got " + v.dump());
    const auto x = v.get<int64_t>();
    if (x < lo || x > hi)
      fail(f, "is " + std::to_string(x) + ", allowed " + std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<int>(x);
  }
  float number(const std::string& f, float def) const {
    if (!present(f)) return def;
    const json& v = j_.at(f);
    if (!v.is_number()) fail(f, "must be a number, got " + v.dump());
    return v.get<float>();
  }
  void boolean(const std::string& f) const {
    if (present(f) && !j_.at(f).is_boolean()) fail(f, "must be true or false, got " + j_.at(f).dump());
  }
  std::string string(const std::string& f, const std::string& def) const {
    if (!present(f)) return def;
    if (!j_.at(f).is_string()) fail(f, "must be a string, got " + j_.at(f).dump());
    return j_.at(f).get<std::string>();
  }
  std::vector<int> int_list(const std::string& f, const std::vector<int>& def, int lo, int hi) const {
    if (!present(f)) return def;
    const json& v = j_.at(f);
    if (!v.is_array() || v.empty()) fail(f, "must be a non-empty list of integers, got " + v.dump());
    std::vector<int> out;
    for (const json& e : v) {
      if (!e.is_number_integer() || e.get<int64_t>() < lo || e.get<int64_t>() > hi)
        fail(f, "must hold integers in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + v.dump());
      out.push_back(e.get<int>());
    }
    return out;
  }
  // A string field whose only supported value is `expected` (absent is fine).
  void require_string(const std::string& f, const std::string& expected) const {
    const std::string v = string(f, expected);
    if (v != expected) fail(f, "is '" + v + "'; this engine supports only '" + expected + "'");
  }

 private:
  const json& j_;
  std::string source_;
};

std::string list_str(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

constexpr int kMaxWidth = 1 << 16;
constexpr int kMaxBlocksPerStage = 64;
// DecoderTiny upsamples between stages, so 4 stages give the 8x of SD's latent space.
constexpr size_t kDecoderStages = 4;

// DecoderTiny's input clamp, computed as torch does in float32: a division, tanh, a product.
// The 3 is hard-coded upstream (it is not latent_magnitude). Only the latent passes through
// here (a few values per output pixel block), so a scalar loop is enough.
Tensor soft_clamp_latents(const Tensor& z) {
  Tensor x(z.shape());
  const float* in = z.data();
  float* out = x.data();
  for (int64_t i = 0; i < z.numel(); ++i) out[i] = std::tanh(in[i] / 3.0f) * 3.0f;
  return x;
}

// decode() maps the decoder's [0, 1] output to the diffusers convention: x.mul(2).sub(1).
void to_signed_range_(Tensor& y) {
  float* v = y.data();
  for (int64_t i = 0; i < y.numel(); ++i) v[i] = v[i] * 2.0f - 1.0f;  // *2 is exact: fusing cannot change it
}

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace

// ---- TaesdConfig ----

TaesdConfig TaesdConfig::from_json(const json& j, const std::string& source) {
  const ConfigFields f(j, source);
  TaesdConfig c;
  f.require_string("_class_name", "AutoencoderTiny");
  c.latent_channels = f.integer("latent_channels", c.latent_channels, 1, kMaxWidth);
  c.out_channels = f.integer("out_channels", c.out_channels, 1, kMaxWidth);
  c.decoder_block_out_channels =
      f.int_list("decoder_block_out_channels", c.decoder_block_out_channels, 1, kMaxWidth);
  c.num_decoder_blocks = f.int_list("num_decoder_blocks", c.num_decoder_blocks, 0, kMaxBlocksPerStage);
  c.scaling_factor = f.number("scaling_factor", c.scaling_factor);
  if (!(c.scaling_factor > 0) || !std::isfinite(c.scaling_factor))
    f.fail("scaling_factor", "must be a positive number, got " + std::to_string(c.scaling_factor));

  const std::vector<int>& widths = c.decoder_block_out_channels;
  if (widths.size() != kDecoderStages)
    f.fail("decoder_block_out_channels", "has " + std::to_string(widths.size()) + " stages " + list_str(widths) +
                                             "; the pipeline's 8x latent scale needs " +
                                             std::to_string(kDecoderStages));
  for (int w : widths)
    if (w != widths.front())
      f.fail("decoder_block_out_channels",
             "is " + list_str(widths) + "; every stage must have the same width (DecoderTiny joins stages "
             "without a projection)");
  if (c.num_decoder_blocks.size() != widths.size())
    f.fail("num_decoder_blocks", "is " + list_str(c.num_decoder_blocks) + ": needs one entry per stage of "
                                     "decoder_block_out_channels " + list_str(widths));
  // diffusers registers block_out_channels itself as a copy of decoder_block_out_channels and
  // ignores it when loading; a different value means the file was edited inconsistently.
  if (f.present("block_out_channels")) {
    const std::vector<int> copy = f.int_list("block_out_channels", {}, 1, kMaxWidth);
    if (copy != widths)
      f.fail("block_out_channels", "is " + list_str(copy) + " but decoder_block_out_channels is " + list_str(widths) +
                                       " (diffusers writes them equal)");
  }

  f.require_string("act_fn", "relu");
  f.require_string("upsample_fn", "nearest");
  const int upsampling = f.integer("upsampling_scaling_factor", 2, 1, kMaxWidth);
  if (upsampling != 2) f.fail("upsampling_scaling_factor", "is " + std::to_string(upsampling) + "; this engine supports only 2");
  if (f.number("shift_factor", 0.0f) != 0.0f)
    f.fail("shift_factor", "is " + j.at("shift_factor").dump() + "; this engine supports only 0");

  // Encoder-side fields: checked for type, not used by the decoder.
  f.integer("in_channels", 3, 1, kMaxWidth);
  f.int_list("encoder_block_out_channels", {}, 1, kMaxWidth);
  f.int_list("num_encoder_blocks", {}, 0, kMaxBlocksPerStage);
  f.number("latent_magnitude", 3);
  f.number("latent_shift", 0.5f);
  f.boolean("force_upcast");
  return c;
}

// ---- AutoencoderTinyBlock ----

AutoencoderTinyBlock::AutoencoderTinyBlock(const Weights& w, int channels)
    : conv0(load_conv(w["conv"][0], channels, channels, 3, 1, 1)),
      conv2(load_conv(w["conv"][2], channels, channels, 3, 1, 1)),
      conv4(load_conv(w["conv"][4], channels, channels, 3, 1, 1)) {}

Tensor AutoencoderTinyBlock::forward(const Tensor& x) const {
  Tensor h = conv0(x);
  ops::relu_(h);
  h = conv2(h);
  ops::relu_(h);
  h = conv4(h, &x);  // conv(x) + skip(x), skip = Identity
  ops::relu_(h);     // the block's `fuse` ReLU after the add
  return h;
}

// ---- TaesdDecoder ----

TaesdDecoder::TaesdDecoder(const TaesdConfig& config, const Weights& w) : config_(config) {
  // Built as DecoderTiny.__init__ appends to its nn.Sequential, so each layer's index is its
  // position here and its weights are decoder.layers.<index>.
  const Weights layers = w["decoder"]["layers"];
  const int width = config.channels();
  auto next = [&] { return layers[static_cast<int>(layers_.size())]; };
  layers_.emplace_back(load_conv(next(), config.latent_channels, width, 3, 1, 1));
  layers_.emplace_back(Relu{});
  const size_t stages = config.num_decoder_blocks.size();
  for (size_t stage = 0; stage < stages; ++stage) {
    const bool last = stage + 1 == stages;
    for (int b = 0; b < config.num_decoder_blocks[stage]; ++b) layers_.emplace_back(AutoencoderTinyBlock(next(), width));
    if (!last) layers_.emplace_back(NearestUpsample2x{});
    // Between stages the conv has no bias; the last one maps to the image channels with bias.
    layers_.emplace_back(load_conv(next(), width, last ? config.out_channels : width, 3, 1, 1, /*bias=*/last));
  }
}

Tensor TaesdDecoder::run(const Layer& layer, Tensor x) {
  return std::visit(Overloaded{
                        [&](const ops::Conv2d& conv) { return conv(x); },
                        [&](const Relu&) {
                          ops::relu_(x);  // x is this forward's own activation, never the caller's latents
                          return x;
                        },
                        [&](const NearestUpsample2x&) { return ops::upsample_nearest2x(x); },
                        [&](const AutoencoderTinyBlock& block) { return block.forward(x); },
                    },
                    layer);
}

void TaesdDecoder::record(const std::string& name, const Tensor& t) const {
  if (trace) trace->emplace_back(name, t.clone());
}

Tensor TaesdDecoder::forward(const Tensor& latents) const {
  if (latents.rank() != 4 || latents.dim(3) != config_.latent_channels || latents.numel() == 0)
    throw std::invalid_argument("TAESD latents must be non-empty NHWC with " + std::to_string(config_.latent_channels) +
                                " channels, got " + shape_str(latents.shape()));
  Tensor x = soft_clamp_latents(latents);
  record("decoder.clamped_input", x);
  for (size_t i = 0; i < layers_.size(); ++i) {
    x = run(layers_[i], std::move(x));
    record("decoder.layers." + std::to_string(i), x);
  }
  to_signed_range_(x);
  return x;
}

// ---- Original (madebyollin) weight names ----

namespace {
constexpr const char* kDiffusersDecoderPrefix = "decoder.layers.";
}

OriginalTaesdDecoderSource::OriginalTaesdDecoderSource(std::unique_ptr<const WeightSource> original)
    : original_(std::move(original)) {
  if (!original_) throw std::invalid_argument("OriginalTaesdDecoderSource needs a source");
}

std::string OriginalTaesdDecoderSource::original_name(const std::string& diffusers_name) {
  const std::string prefix = kDiffusersDecoderPrefix;
  if (diffusers_name.compare(0, prefix.size(), prefix) != 0) return "";
  const size_t start = prefix.size(), dot = diffusers_name.find('.', start);
  if (dot == std::string::npos || dot == start || dot - start > 6) return "";
  for (size_t i = start; i < dot; ++i)
    if (diffusers_name[i] < '0' || diffusers_name[i] > '9') return "";
  const int index = std::stoi(diffusers_name.substr(start, dot - start));
  return std::to_string(index + 1) + diffusers_name.substr(dot);  // +1: the original starts with Clamp
}

bool OriginalTaesdDecoderSource::contains(const std::string& name) const {
  const std::string original = original_name(name);
  return !original.empty() && original_->contains(original);
}

Tensor OriginalTaesdDecoderSource::load(const std::string& name, const Shape& shape) const {
  const std::string original = original_name(name);
  if (original.empty())
    throw ModelError(describe() + ": tensor '" + name + "' is not a TAESD decoder tensor; this file holds only the decoder");
  if (!original_->contains(original))
    throw ModelError(original_->describe() + ": tensor '" + original + "' (diffusers name '" + name +
                     "') is missing from this TAESD decoder file");
  return original_->load(original, shape);
}

std::string OriginalTaesdDecoderSource::describe() const {
  return original_->describe() + " (madebyollin taesd_decoder naming)";
}

bool has_original_taesd_decoder_names(const WeightSource& source) {
  return source.contains("1.weight") && !source.contains(std::string(kDiffusersDecoderPrefix) + "0.weight");
}

}  // namespace lcmd
