// Linear layers on oneDNN matmul: weights packed once into the blocked layout of the brgemm
// kernel (bf16, or int8 quantized per output channel, at those precisions), one primitive
// per row count (and residual yes/no), cached.
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/dnnl_impl.h"
#include "ops/ops.h"
#include "ops/parallel_impl.h"
#include "ops/quantize_impl.h"
#include "ops/work_counter.h"

namespace lcmd::ops {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {

// The row count the packed layout is chosen for. brgemm matmul picks the same layout for
// every M from about 64 up; smaller M run on it too (checked in create_plan).
constexpr int64_t kPackingRows = 256;

struct PlanKey {
  int64_t rows;
  bool residual;
  int threads;  // oneDNN partitions the work for the thread count at creation
  auto operator<=>(const PlanKey&) const = default;
};

struct MatmulPlan {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  memory weights;                                 // the shared packed weights, or a private re-layout
  std::optional<detail::ReorderStep> to_bf16;     // BF16: the f32 -> bf16 source conversion
};

}  // namespace

struct Linear::Impl {
  int in = 0, out = 0;
  bool has_bias = false;
  Precision precision = Precision::FP32;
  memory weights;              // [in, out] as matmul's B, packed, in weights_type(precision)
  memory bias;                 // [1, out] float32
  detail::Int8Scaling int8;    // INT8 only
  std::mutex mutex;
  std::map<PlanKey, std::shared_ptr<const MatmulPlan>> plans;

  std::string describe() const {
    return "Linear(in=" + std::to_string(in) + ", out=" + std::to_string(out) + ", " + precision_name(precision) + ")";
  }

  dnnl::primitive_attr attributes(bool residual) const {
    // The output channel is dimension 1 of the [rows, out] destination.
    if (precision == Precision::INT8) return detail::int8_attributes(int8.weight_scales, 1, 2, residual);
    dnnl::primitive_attr attr = detail::user_scratchpad_attr();
    if (residual) {  // dst holds the residual on entry: dst = x W^T + b + dst
      dnnl::post_ops ops;
      ops.append_sum(1.f);
      attr.set_post_ops(ops);
    }
    return attr;
  }

  memory::desc any_weights() const { return memory::desc({in, out}, detail::weights_type(precision), tag::any); }

  dnnl::matmul::primitive_desc make_pd(int64_t rows, bool residual, const memory::desc& weights_md) const {
    const memory::desc src({rows, in}, detail::source_type(precision), tag::ab), dst({rows, out}, dt::f32, tag::ab);
    const auto desc = has_bias ? dnnl::matmul::desc(src, weights_md, bias.get_desc(), dst)
                               : dnnl::matmul::desc(src, weights_md, dst);
    return dnnl::matmul::primitive_desc(desc, attributes(residual), detail::cpu_engine());
  }

  std::shared_ptr<const MatmulPlan> create_plan(int64_t rows, bool residual) const {
    std::optional<dnnl::matmul::primitive_desc> pd;
    try {
      pd = make_pd(rows, residual, weights.get_desc());
    } catch (const dnnl::error&) {  // no implementation at all takes the packed layout here
    }
    memory plan_weights = weights;
    if (!pd || detail::is_reference_impl(*pd)) {
      // No fast kernel takes the packed layout at this row count: give this plan its own copy
      // in the layout it prefers rather than running the naive loops.
      pd = make_pd(rows, residual, any_weights());
      plan_weights = detail::relayout(weights, pd->weights_desc());
    }
    std::optional<detail::ReorderStep> to_bf16;
    if (precision == Precision::BF16) to_bf16 = detail::make_reorder(memory::desc({rows, in}, dt::f32, tag::ab), pd->src_desc());
    return std::make_shared<const MatmulPlan>(MatmulPlan{*pd, dnnl::matmul(*pd), plan_weights, std::move(to_bf16)});
  }

  std::shared_ptr<const MatmulPlan> plan(int64_t rows, bool residual) {
    const PlanKey key{rows, residual, num_threads()};
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it == plans.end()) it = plans.emplace(key, create_plan(rows, residual)).first;
    return it->second;
  }

  // The primitive the packed layout is chosen for, or nothing if oneDNN has only its
  // reference loops (or nothing at all) at this precision.
  std::optional<dnnl::matmul::primitive_desc> packing_pd() const {
    try {
      auto pd = make_pd(kPackingRows, false, any_weights());
      if (precision == Precision::FP32 || !detail::is_reference_impl(pd)) return pd;
    } catch (const dnnl::error&) {
    }
    return std::nullopt;
  }

  // Packs `given` (matmul's B = W^T [in, out], in any layout and float dtype) into the layout
  // this layer computes on. `in_place`: given's data outlives the layer (a packed model's
  // mapping), so weights already in that layout are used as they are, without a copy.
  void pack_weights(const memory& given, bool in_place) {
    std::optional<detail::Int8Weights> quantized;
    const std::optional<dnnl::matmul::primitive_desc> pd = detail::packing_pd_or_fp32(
        precision, describe(), given, {in, out}, tag::ba, out, int8, quantized, [&] { return packing_pd(); });
    if (!pd) throw std::runtime_error(describe() + ": oneDNN has no matrix product for this layer");
    std::optional<memory> int8_values;
    if (quantized) int8_values = detail::wrap_memory({{in, out}, dt::s8, tag::ba}, quantized->values.data());
    weights = detail::keep_weights(given, int8_values, pd->weights_desc(), in_place);
  }

  void init(int in_features, int out_features, const float* bias_values, Precision requested) {
    if (in_features <= 0 || out_features <= 0)
      throw std::invalid_argument("Linear: features must be positive, got in=" + std::to_string(in_features) +
                                  " out=" + std::to_string(out_features));
    in = in_features;
    out = out_features;
    has_bias = bias_values != nullptr;
    precision = detail::layer_precision(requested, in, out);
    if (bias_values) {
      bias = memory({{1, out}, dt::f32, tag::ab}, detail::cpu_engine());
      std::memcpy(bias.get_data_handle(), bias_values, sizeof(float) * out);
      if (precision == Precision::INT8) int8.bias.assign(bias_values, bias_values + out);
    }
  }

  int64_t rows_of(const Tensor& x, const Tensor* residual, Shape* out_shape) const {
    if (x.rank() < 1 || x.dim(-1) != in)
      throw std::invalid_argument(describe() + ": input " + shape_str(x.shape()) + " must have " + std::to_string(in) +
                                  " features in its last dimension");
    *out_shape = x.shape();
    out_shape->back() = out;
    if (residual && residual->shape() != *out_shape)
      throw std::invalid_argument(describe() + ": residual " + shape_str(residual->shape()) +
                                  " does not match the output " + shape_str(*out_shape));
    return x.numel() / in;
  }
};

Linear::Linear() = default;
Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

Linear::Linear(const float* weight, const float* bias, int in, int out, Precision precision)
    : impl_(std::make_unique<Impl>()) {
  if (!weight) throw std::invalid_argument("Linear: weight pointer is null");
  impl_->init(in, out, bias, precision);
  // PyTorch's [out, in] row-major weight is matmul's B = W^T [in, out] in column-major (ba).
  impl_->pack_weights(detail::wrap_memory({{in, out}, dt::f32, tag::ba}, weight), false);
}

Linear::Linear(const StoredWeights& weights, const float* bias, int in, int out, Precision precision)
    : impl_(std::make_unique<Impl>()) {
  impl_->init(in, out, bias, precision);
  impl_->pack_weights(detail::stored_weights_memory(weights, {in, out}), true);
}

StoredWeights Linear::stored_weights() const {
  if (!impl_) throw std::logic_error("Linear: called on a default-constructed layer (no weights)");
  const memory::desc md = impl_->weights.get_desc();
  return {detail::describe_layout(md), impl_->weights.get_data_handle(), md.get_size()};
}

Tensor Linear::operator()(const Tensor& x, const Tensor* residual) const { return run(x, residual, nullptr); }

Tensor Linear::operator()(const Tensor& x, Tensor&& residual) const {
  const bool in_place = residual.sole_owner() && residual.data() != x.data();
  return run(x, &residual, in_place ? &residual : nullptr);
}

Tensor Linear::run(const Tensor& x, const Tensor* residual, Tensor* accumulate) const {
  if (!impl_) throw std::logic_error("Linear: called on a default-constructed layer (no weights)");
  Impl& m = *impl_;
  const int in = m.in, out = m.out;
  Shape out_shape;
  const int64_t rows = m.rows_of(x, residual, &out_shape);
  // The primitive's sum post-op adds what y holds: the residual, copied in or accumulated into.
  Tensor y = accumulate ? std::move(*accumulate) : Tensor(out_shape);
  if (rows == 0) return y;
  if (residual && !accumulate) detail::parallel_copy(y.data(), residual->data(), y.numel());
  count_macs(static_cast<uint64_t>(rows) * in * out);

  detail::sync_openmp_threads();
  const auto plan = m.plan(rows, residual != nullptr);
  const detail::SourceArguments source(m.precision, x.data(), x.numel(), plan->pd.src_desc(),
                                       plan->to_bf16 ? &*plan->to_bf16 : nullptr, m.bias, &m.int8);
  std::unordered_map<int, memory> args{{DNNL_ARG_WEIGHTS, plan->weights},
                                       {DNNL_ARG_DST, detail::wrap_memory(plan->pd.dst_desc(), y.data())}};
  source.add_to(args);
  detail::run_primitive(plan->primitive, plan->pd, std::move(args));
  return y;
}

int Linear::in_features() const { return impl_ ? impl_->in : 0; }
int Linear::out_features() const { return impl_ ? impl_->out : 0; }
Precision Linear::precision() const { return impl_ ? impl_->precision : Precision::FP32; }

std::string Linear::implementation(int64_t rows) const {
  if (!impl_) throw std::logic_error("Linear: called on a default-constructed layer (no weights)");
  if (rows <= 0) throw std::invalid_argument(impl_->describe() + ": row count must be positive, got " + std::to_string(rows));
  detail::sync_openmp_threads();
  const auto plan = impl_->plan(rows, false);
  return std::string(precision_name(impl_->precision)) + " matmul " + plan->pd.impl_info_str();
}

}  // namespace lcmd::ops
