// Weights in oneDNN's blocked layouts written to and read from packed model files: the layout
// as portable JSON (the fields of a blocked memory descriptor), checked strictly on the way in
// because the file may be hostile.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>

#include "ops/dnnl_impl.h"
#include "ops/ops.h"
#include "ops/winograd_impl.h"

#include <nlohmann/json.hpp>

namespace lcmd::ops {

namespace {

std::atomic<int> g_in_place{0}, g_relaid{0};

const char* type_name(dnnl_data_type_t t) {
  switch (t) {
    case dnnl_f32: return "f32";
    case dnnl_bf16: return "bf16";
    case dnnl_f16: return "f16";
    default: return nullptr;
  }
}

dnnl_data_type_t type_of(const std::string& name) {
  if (name == "f32") return dnnl_f32;
  if (name == "bf16") return dnnl_bf16;
  if (name == "f16") return dnnl_f16;
  throw std::invalid_argument("layout: data_type must be f32, bf16 or f16, got \"" + name + "\"");
}

template <class T>
nlohmann::json list(const T* values, int n) {
  return nlohmann::json(std::vector<int64_t>(values, values + n));
}

// A JSON array of exactly n integers in [lo, hi] into out.
void read_list(const nlohmann::json& layout, const char* field, int n, int64_t lo, int64_t hi, dnnl_dim_t* out) {
  const auto it = layout.find(field);
  if (it == layout.end() || !it->is_array() || static_cast<int>(it->size()) != n)
    throw std::invalid_argument(std::string("layout: \"") + field + "\" must be an array of " + std::to_string(n) +
                                " integers");
  for (int i = 0; i < n; ++i) {
    const auto& v = (*it)[i];
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      throw std::invalid_argument(std::string("layout: \"") + field + "\" has a value out of range");
    out[i] = v.get<int64_t>();
  }
}

}  // namespace

namespace detail {

std::string describe_layout(const dnnl::memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  const char* type = type_name(d.data_type);
  if (d.format_kind != dnnl_blocked || d.extra.flags != 0 || !type) return "";  // e.g. int8 compensation
  const dnnl_blocking_desc_t& b = d.format_desc.blocking;
  return nlohmann::json{{"dims", list(d.dims, d.ndims)},
          {"data_type", type},
          {"padded_dims", list(d.padded_dims, d.ndims)},
          {"padded_offsets", list(d.padded_offsets, d.ndims)},
          {"offset0", d.offset0},
          {"strides", list(b.strides, d.ndims)},
          {"inner_blks", list(b.inner_blks, b.inner_nblks)},
          {"inner_idxs", list(b.inner_idxs, b.inner_nblks)}}
      .dump();
}

dnnl::memory::desc layout_from_json(const std::string& text, const dnnl::memory::dims& expected_dims) {
  const nlohmann::json layout = nlohmann::json::parse(text, nullptr, false);
  if (!layout.is_object()) throw std::invalid_argument("layout: not a JSON object");
  dnnl_memory_desc_t d;
  std::memset(&d, 0, sizeof d);
  const int ndims = static_cast<int>(expected_dims.size());
  if (ndims < 1 || ndims > DNNL_MAX_NDIMS) throw std::invalid_argument("layout: unsupported rank");
  d.ndims = ndims;
  constexpr int64_t kMaxDim = int64_t{1} << 31;
  read_list(layout, "dims", ndims, 1, kMaxDim, d.dims);
  for (int i = 0; i < ndims; ++i)
    if (d.dims[i] != expected_dims[i]) throw std::invalid_argument("layout: dims do not match the tensor's shape");
  const auto type = layout.find("data_type");
  if (type == layout.end() || !type->is_string()) throw std::invalid_argument("layout: \"data_type\" is missing");
  d.data_type = type_of(type->get<std::string>());
  read_list(layout, "padded_dims", ndims, 1, kMaxDim, d.padded_dims);
  read_list(layout, "padded_offsets", ndims, 0, 0, d.padded_offsets);
  const auto offset0 = layout.find("offset0");
  if (offset0 == layout.end() || !offset0->is_number_integer() || offset0->get<int64_t>() != 0)
    throw std::invalid_argument("layout: \"offset0\" must be 0");
  d.format_kind = dnnl_blocked;
  dnnl_blocking_desc_t& b = d.format_desc.blocking;
  read_list(layout, "strides", ndims, 0, int64_t{1} << 40, b.strides);
  const auto blks = layout.find("inner_blks");
  if (blks == layout.end() || !blks->is_array() || blks->size() > DNNL_MAX_NDIMS)
    throw std::invalid_argument("layout: \"inner_blks\" must be an array of at most " + std::to_string(DNNL_MAX_NDIMS));
  b.inner_nblks = static_cast<int>(blks->size());
  read_list(layout, "inner_blks", b.inner_nblks, 1, 64, b.inner_blks);
  read_list(layout, "inner_idxs", b.inner_nblks, 0, ndims - 1, b.inner_idxs);
  // Every dimension's padded size is a whole number of its blocks and covers the dimension.
  // The last element's offset must lie inside the size oneDNN computes from the descriptor
  // (which assumes non-overlapping strides), so no stride pattern reads past the data.
  int64_t inner = 1, last = 0;
  for (int k = 0; k < b.inner_nblks; ++k) inner *= b.inner_blks[k];
  for (int i = 0; i < ndims; ++i) {
    int64_t block = 1;
    for (int k = 0; k < b.inner_nblks; ++k)
      if (b.inner_idxs[k] == i) block *= b.inner_blks[k];
    if (d.padded_dims[i] < d.dims[i] || d.padded_dims[i] % block != 0 || d.padded_dims[i] > 2 * d.dims[i] + 64)
      throw std::invalid_argument("layout: padded_dims do not fit the blocks");
    last += (d.padded_dims[i] / block - 1) * b.strides[i];
  }
  const dnnl::memory::desc md(d);
  const int64_t elements = static_cast<int64_t>(md.get_size() / dnnl::memory::data_type_size(md.data_type()));
  if (last + inner > elements) throw std::invalid_argument("layout: the strides overlap or leave the data");
  return md;
}

dnnl::memory keep_weights(const dnnl::memory& given, const std::optional<dnnl::memory>& int8_values,
                          const dnnl::memory::desc& target, bool in_place) {
  const bool reuse = in_place && !int8_values && given.get_desc() == target;
  if (in_place) count_stored_weights_use(reuse);
  return reuse ? given : relayout(int8_values ? *int8_values : given, target);
}

void count_stored_weights_use(bool used_in_place) { (used_in_place ? g_in_place : g_relaid).fetch_add(1); }

size_t stored_rank(const StoredWeights& stored) {
  const nlohmann::json layout = nlohmann::json::parse(stored.layout, nullptr, false);
  const bool has_dims = layout.is_object() && layout.contains("dims") && layout["dims"].is_array();
  return has_dims ? layout["dims"].size() : 0;
}

bool is_winograd_f2_layout(const StoredWeights& stored) { return stored_rank(stored) == 3; }

std::vector<float> to_plain_f32(const dnnl::memory& weights, const dnnl::memory::dims& dims, dnnl::memory::format_tag tag) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<float> plain(static_cast<size_t>(n));
  const dnnl::memory to = wrap_memory({dims, dnnl::memory::data_type::f32, tag}, plain.data());
  sync_openmp_threads();
  dnnl::reorder::primitive_desc pd(weights, to, user_scratchpad_attr());
  run_primitive(dnnl::reorder(pd), pd, {{DNNL_ARG_FROM, weights}, {DNNL_ARG_TO, to}});
  return plain;
}

dnnl::memory stored_weights_memory(const StoredWeights& stored, const dnnl::memory::dims& dims) {
  const dnnl::memory::desc md = layout_from_json(stored.layout, dims);
  if (md.get_size() != stored.size)
    throw std::invalid_argument("layout: " + std::to_string(stored.size) + " bytes stored, the layout needs " +
                                std::to_string(md.get_size()));
  if (!stored.data) throw std::invalid_argument("layout: no data");
  return wrap_memory(md, stored.data);
}

}  // namespace detail

Tensor unpack_stored_weights(const StoredWeights& weights, const Shape& shape) {
  if (detail::is_winograd_f2_layout(weights)) {  // a bf16 Winograd layer's [16, cin, cout]
    if (shape.size() != 4 || shape[2] != 3 || shape[3] != 3)
      throw std::invalid_argument("stored weights: Winograd-transformed weights cannot have shape " + shape_str(shape));
    const std::vector<float> plain = detail::inverse_winograd_f2(
        detail::stored_weights_memory(weights, detail::winograd_f2_dims(shape[1], shape[0])), shape[1], shape[0]);
    Tensor out(shape);
    std::copy(plain.begin(), plain.end(), out.data());
    return out;
  }
  // Convolutions store [cout, cin, k, k]; linear layers (and 1x1 convolutions, which run as
  // one) store matmul's B = W^T, [in, out].
  const bool matrix = detail::stored_rank(weights) == 2;
  if (matrix && shape.size() != 2 && !(shape.size() == 4 && shape[2] == 1 && shape[3] == 1))
    throw std::invalid_argument("stored weights: a matrix cannot have shape " + shape_str(shape));
  const dnnl::memory::dims dims = matrix ? dnnl::memory::dims{shape[1], shape[0]} : dnnl::memory::dims(shape.begin(), shape.end());
  const std::vector<float> plain =
      detail::to_plain_f32(detail::stored_weights_memory(weights, dims), dims,
                           matrix ? dnnl::memory::format_tag::ba : dnnl::memory::format_tag::oihw);
  Tensor out(shape);
  std::copy(plain.begin(), plain.end(), out.data());
  return out;
}

StoredWeightsUse stored_weights_use() { return {g_in_place.load(), g_relaid.load()}; }

}  // namespace lcmd::ops
