// 2-D convolution on oneDNN (brgconv, NHWC activations). Weights are packed once; each
// input shape gets its own primitive, cached. A 1x1 stride-1 convolution over NHWC is a
// matrix product over pixels, so it runs as a Linear (brgemm matmul keeps one packed layout
// for every pixel count, while brgconv_1x1 changes layout with the spatial size).
#include <algorithm>
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

// The input size the packed weights layout is chosen for. brgconv picks the same 3x3 layout
// for every size we measured (4x4 to 128x128); other sizes are checked in create_plan.
constexpr int64_t kPackingSize = 32;

struct PlanKey {
  int64_t batch, height, width;
  bool residual;
  int threads;  // oneDNN partitions the work for the thread count at creation
  auto operator<=>(const PlanKey&) const = default;
};

struct ConvPlan {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward primitive;
  memory weights;  // the shared packed weights, or a private re-layout (see create_plan)
};

}  // namespace

struct Conv2d::Impl {
  int cin = 0, cout = 0, kernel = 0, stride = 1, padding = 0;
  bool has_bias = false;
  std::optional<Linear> pointwise;  // set for 1x1, stride 1, no padding
  memory weights;                   // [cout, cin, k, k] packed
  memory bias;                      // [cout]
  std::mutex mutex;
  std::map<PlanKey, std::shared_ptr<const ConvPlan>> plans;

  int64_t output_size(int64_t in) const { return (in + 2 * padding - kernel) / stride + 1; }

  std::string describe() const {
    return "Conv2d(cin=" + std::to_string(cin) + ", cout=" + std::to_string(cout) + ", kernel=" +
           std::to_string(kernel) + ", stride=" + std::to_string(stride) + ", padding=" + std::to_string(padding) + ")";
  }

  dnnl::convolution_forward::primitive_desc make_pd(const PlanKey& key, const memory::desc& weights_md) const {
    const memory::desc src({key.batch, cin, key.height, key.width}, dt::f32, tag::nhwc);
    const memory::desc dst({key.batch, cout, output_size(key.height), output_size(key.width)}, dt::f32, tag::nhwc);
    dnnl::primitive_attr attr = detail::user_scratchpad_attr();
    if (key.residual) {  // dst holds the residual on entry: dst = conv(x) + b + dst
      dnnl::post_ops ops;
      ops.append_sum(1.f);
      attr.set_post_ops(ops);
    }
    const memory::dims strides{stride, stride}, pad{padding, padding};
    const auto kind = dnnl::prop_kind::forward_inference;
    const auto algo = dnnl::algorithm::convolution_direct;
    const auto desc = has_bias ? dnnl::convolution_forward::desc(kind, algo, src, weights_md, bias.get_desc(), dst,
                                                                 strides, pad, pad)
                               : dnnl::convolution_forward::desc(kind, algo, src, weights_md, dst, strides, pad, pad);
    return dnnl::convolution_forward::primitive_desc(desc, attr, detail::cpu_engine());
  }

  memory::desc any_weights() const { return memory::desc({cout, cin, kernel, kernel}, dt::f32, tag::any); }

  std::shared_ptr<const ConvPlan> create_plan(const PlanKey& key) const {
    std::optional<dnnl::convolution_forward::primitive_desc> pd;
    try {
      pd = make_pd(key, weights.get_desc());
    } catch (const dnnl::error&) {  // no implementation at all takes the packed layout here
    }
    memory plan_weights = weights;
    if (!pd || detail::is_reference_impl(*pd)) {
      // No fast kernel takes the packed layout at this shape: give this plan its own copy in
      // the layout it prefers rather than running the naive loops.
      pd = make_pd(key, any_weights());
      plan_weights = detail::relayout(weights, pd->weights_desc());
    }
    return std::make_shared<const ConvPlan>(ConvPlan{*pd, dnnl::convolution_forward(*pd), plan_weights});
  }

  std::shared_ptr<const ConvPlan> plan(const PlanKey& key) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it == plans.end()) it = plans.emplace(key, create_plan(key)).first;
    return it->second;
  }
};

Conv2d::Conv2d() = default;
Conv2d::~Conv2d() = default;
Conv2d::Conv2d(Conv2d&&) noexcept = default;
Conv2d& Conv2d::operator=(Conv2d&&) noexcept = default;

Conv2d::Conv2d(const float* weight, const float* bias, int cin, int cout, int kernel, int stride, int padding,
               Precision precision)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.cin = cin;
  m.cout = cout;
  m.kernel = kernel;
  m.stride = stride;
  m.padding = padding;
  m.has_bias = bias != nullptr;
  if (cin <= 0 || cout <= 0 || kernel <= 0 || stride <= 0 || padding < 0)
    throw std::invalid_argument(m.describe() + ": channels, kernel and stride must be positive, padding >= 0");
  if (!weight) throw std::invalid_argument(m.describe() + ": weight pointer is null");
  if (precision != Precision::FP32)
    throw std::invalid_argument(m.describe() + ": unsupported precision " + precision_name(precision));

  if (kernel == 1 && stride == 1 && padding == 0) {
    m.pointwise.emplace(weight, bias, cin, cout, precision);  // [cout, cin, 1, 1] == [cout, cin]
    return;
  }
  if (bias) {
    m.bias = memory({{cout}, dt::f32, tag::x}, detail::cpu_engine());
    std::memcpy(m.bias.get_data_handle(), bias, sizeof(float) * cout);
  }
  const int64_t size = std::max<int64_t>(kPackingSize, kernel);
  const auto pd = m.make_pd(PlanKey{1, size, size, false, num_threads()}, m.any_weights());
  const memory user_weights = detail::wrap_memory({{cout, cin, kernel, kernel}, dt::f32, tag::oihw}, weight);
  m.weights = detail::relayout(user_weights, pd.weights_desc());
}

Tensor Conv2d::operator()(const Tensor& x, const Tensor* residual) const {
  if (!impl_) throw std::logic_error("Conv2d: called on a default-constructed convolution (no weights)");
  Impl& m = *impl_;
  if (x.rank() != 4 || x.dim(3) != m.cin)
    throw std::invalid_argument(m.describe() + ": input " + shape_str(x.shape()) + " must be NHWC [N, H, W, " +
                                std::to_string(m.cin) + "]");
  const int64_t batch = x.dim(0), height = x.dim(1), width = x.dim(2);
  const int64_t out_h = m.output_size(height), out_w = m.output_size(width);
  if (height <= 0 || width <= 0 || out_h <= 0 || out_w <= 0)
    throw std::invalid_argument(m.describe() + ": input " + shape_str(x.shape()) + " is too small for the kernel");
  const Shape out_shape{batch, out_h, out_w, m.cout};
  if (residual && residual->shape() != out_shape)
    throw std::invalid_argument(m.describe() + ": residual " + shape_str(residual->shape()) +
                                " does not match the output " + shape_str(out_shape));
  if (m.pointwise) return (*m.pointwise)(x, residual);

  Tensor y(out_shape);
  if (batch == 0) return y;
  if (residual) detail::parallel_copy(y.data(), residual->data(), y.numel());
  detail::sync_openmp_threads();
  const auto plan = m.plan(PlanKey{batch, height, width, residual != nullptr, num_threads()});
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, detail::wrap_memory(plan->pd.src_desc(), x.data())},
      {DNNL_ARG_WEIGHTS, plan->weights},
      {DNNL_ARG_DST, detail::wrap_memory(plan->pd.dst_desc(), y.data())}};
  if (m.has_bias) args.emplace(DNNL_ARG_BIAS, m.bias);
  detail::run_primitive(plan->primitive, plan->pd, std::move(args));
  return y;
}

int Conv2d::in_channels() const { return impl_ ? impl_->cin : 0; }
int Conv2d::out_channels() const { return impl_ ? impl_->cout : 0; }

}  // namespace lcmd::ops
