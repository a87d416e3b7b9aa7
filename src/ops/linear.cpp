// Linear layers on oneDNN matmul: weights packed once into the blocked layout of the brgemm
// kernel, one primitive per row count (and residual yes/no), cached.
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include "ops/dnnl_impl.h"
#include "ops/ops.h"
#include "ops/parallel_impl.h"

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
  memory weights;  // the shared packed weights, or a private re-layout (see create_plan)
};

}  // namespace

struct Linear::Impl {
  int in = 0, out = 0;
  bool has_bias = false;
  memory weights;  // [in, out] as matmul's B, packed
  memory bias;     // [1, out]
  std::mutex mutex;
  std::map<PlanKey, std::shared_ptr<const MatmulPlan>> plans;

  dnnl::matmul::primitive_desc make_pd(int64_t rows, bool residual, const memory::desc& weights_md) const {
    const memory::desc src({rows, in}, dt::f32, tag::ab), dst({rows, out}, dt::f32, tag::ab);
    dnnl::primitive_attr attr = detail::user_scratchpad_attr();
    if (residual) {  // dst holds the residual on entry: dst = x W^T + b + dst
      dnnl::post_ops ops;
      ops.append_sum(1.f);
      attr.set_post_ops(ops);
    }
    const auto desc = has_bias ? dnnl::matmul::desc(src, weights_md, bias.get_desc(), dst)
                               : dnnl::matmul::desc(src, weights_md, dst);
    return dnnl::matmul::primitive_desc(desc, attr, detail::cpu_engine());
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
      pd = make_pd(rows, residual, memory::desc({in, out}, dt::f32, tag::any));
      plan_weights = detail::relayout(weights, pd->weights_desc());
    }
    return std::make_shared<const MatmulPlan>(MatmulPlan{*pd, dnnl::matmul(*pd), plan_weights});
  }

  std::shared_ptr<const MatmulPlan> plan(int64_t rows, bool residual) {
    const PlanKey key{rows, residual, num_threads()};
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it == plans.end()) it = plans.emplace(key, create_plan(rows, residual)).first;
    return it->second;
  }
};

Linear::Linear() = default;
Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

Linear::Linear(const float* weight, const float* bias, int in, int out, Precision precision)
    : impl_(std::make_unique<Impl>()) {
  if (in <= 0 || out <= 0)
    throw std::invalid_argument("Linear: features must be positive, got in=" + std::to_string(in) +
                                " out=" + std::to_string(out));
  if (!weight) throw std::invalid_argument("Linear: weight pointer is null");
  if (precision != Precision::FP32)
    throw std::invalid_argument(std::string("Linear: unsupported precision ") + precision_name(precision));
  impl_->in = in;
  impl_->out = out;
  impl_->has_bias = bias != nullptr;
  if (bias) {
    impl_->bias = memory({{1, out}, dt::f32, tag::ab}, detail::cpu_engine());
    std::memcpy(impl_->bias.get_data_handle(), bias, sizeof(float) * out);
  }
  // PyTorch's [out, in] row-major weight is matmul's B = W^T [in, out] in column-major (ba).
  const memory user_weights = detail::wrap_memory({{in, out}, dt::f32, tag::ba}, weight);
  const auto pd = impl_->make_pd(kPackingRows, false, memory::desc({in, out}, dt::f32, tag::any));
  impl_->weights = detail::relayout(user_weights, pd.weights_desc());
}

Tensor Linear::operator()(const Tensor& x, const Tensor* residual) const {
  if (!impl_) throw std::logic_error("Linear: called on a default-constructed layer (no weights)");
  const int in = impl_->in, out = impl_->out;
  if (x.rank() < 1 || x.dim(-1) != in)
    throw std::invalid_argument("Linear(in=" + std::to_string(in) + ", out=" + std::to_string(out) + "): input " +
                                shape_str(x.shape()) + " must have " + std::to_string(in) + " features in its last dimension");
  Shape out_shape = x.shape();
  out_shape.back() = out;
  if (residual && residual->shape() != out_shape)
    throw std::invalid_argument("Linear: residual " + shape_str(residual->shape()) + " does not match the output " +
                                shape_str(out_shape));
  Tensor y(out_shape);
  const int64_t rows = x.numel() / in;
  if (rows == 0) return y;
  if (residual) detail::parallel_copy(y.data(), residual->data(), y.numel());

  detail::sync_openmp_threads();
  const auto plan = impl_->plan(rows, residual != nullptr);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, detail::wrap_memory(plan->pd.src_desc(), x.data())},
      {DNNL_ARG_WEIGHTS, plan->weights},
      {DNNL_ARG_DST, detail::wrap_memory(plan->pd.dst_desc(), y.data())}};
  if (impl_->has_bias) args.emplace(DNNL_ARG_BIAS, impl_->bias);
  detail::run_primitive(plan->primitive, plan->pd, std::move(args));
  return y;
}

int Linear::in_features() const { return impl_ ? impl_->in : 0; }
int Linear::out_features() const { return impl_ ? impl_->out : 0; }

}  // namespace lcmd::ops
