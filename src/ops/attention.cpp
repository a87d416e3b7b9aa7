// Multi-head attention softmax(q k^T / sqrt(d)) v without materialising all scores at once.
//
// Work is split into tasks of (batch, head, block of query rows). A task computes its
// [rows, Sk] block of scores with one oneDNN matmul, turns each row into exp(s - max) in
// place, multiplies by V with a second matmul straight into the output, and divides each
// output row by its exp sum. Each thread runs whole tasks; the matmuls inside a parallel
// region run single-threaded on that thread (oneDNN does not nest OpenMP teams).
//
// Each thread repacks K^T and V of the head it works on into the blocked layout the matmul
// kernel reads, once per head (not per task), and the head's columns are read from the
// interleaved [B, S, H*d] tensors through row strides, so q and the output are not copied.
// The whole call is one parallel region without barriers: on a loaded machine every
// additional fork/join can wait a scheduler time slice for a preempted thread.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/dnnl_impl.h"
#include "ops/ops.h"
#include "ops/parallel_impl.h"
#include "ops/vec_math_impl.h"

namespace lcmd::ops {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {

// Scores kept per task: about this many floats (rows * Sk), so the block stays in L2.
constexpr int64_t kScoreBlockFloats = 64 * 1024;
constexpr int64_t kMinBlockRows = 16, kMaxBlockRows = 256;

struct BlockShape {
  int64_t rows, keys, head_dim, row_stride;  // row_stride = H*d of the q/k/v/output tensors
  auto operator<=>(const BlockShape&) const = default;
};

// The primitives of one block shape; shared by all threads (oneDNN primitives may run
// concurrently, each call with its own scratchpad).
struct BlockPrimitives {
  dnnl::matmul::primitive_desc scores_pd, mix_pd;    // S = Q K^T, O = P V
  dnnl::matmul scores, mix;
  dnnl::reorder::primitive_desc pack_k_pd, pack_v_pd;  // strided K^T, V -> packed
  dnnl::reorder pack_k, pack_v;
};

std::shared_ptr<const BlockPrimitives> create_block_primitives(const BlockShape& s) {
  const auto& engine = detail::cpu_engine();
  const dnnl::primitive_attr attr = detail::user_scratchpad_attr();
  const memory::desc q_block({s.rows, s.head_dim}, dt::f32, memory::dims{s.row_stride, 1});
  const memory::desc scores({s.rows, s.keys}, dt::f32, tag::ab);
  const memory::desc out_block({s.rows, s.head_dim}, dt::f32, memory::dims{s.row_stride, 1});
  const memory::desc k_t_any({s.head_dim, s.keys}, dt::f32, tag::any), v_any({s.keys, s.head_dim}, dt::f32, tag::any);
  auto p = std::make_shared<BlockPrimitives>();
  p->scores_pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(q_block, k_t_any, scores), attr, engine);
  p->mix_pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(scores, v_any, out_block), attr, engine);
  p->scores = dnnl::matmul(p->scores_pd);
  p->mix = dnnl::matmul(p->mix_pd);
  // K^T of one head, viewed in place: element (i, j) = k[j * row_stride + i].
  const memory::desc k_t_strided({s.head_dim, s.keys}, dt::f32, memory::dims{1, s.row_stride});
  const memory::desc v_strided({s.keys, s.head_dim}, dt::f32, memory::dims{s.row_stride, 1});
  p->pack_k_pd = dnnl::reorder::primitive_desc(engine, k_t_strided, engine, p->scores_pd.weights_desc(), attr);
  p->pack_v_pd = dnnl::reorder::primitive_desc(engine, v_strided, engine, p->mix_pd.weights_desc(), attr);
  p->pack_k = dnnl::reorder(p->pack_k_pd);
  p->pack_v = dnnl::reorder(p->pack_v_pd);
  return p;
}

std::shared_ptr<const BlockPrimitives> block_primitives(const BlockShape& shape) {
  static std::mutex mutex;
  static std::map<BlockShape, std::shared_ptr<const BlockPrimitives>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(shape);
  if (it == cache.end()) it = cache.emplace(shape, create_block_primitives(shape)).first;
  return it->second;
}

// Replaces the first `valid` scores of a row by exp((s - max) * scale) and the rest by 0
// (masked keys); returns the sum of the exps.
LCMD_VECTOR_CLONES
float exp_shifted_row(float* s, int64_t keys, int64_t valid, float scale) {
  float max = -INFINITY;
#pragma omp simd reduction(max : max)
  for (int64_t j = 0; j < valid; ++j) max = s[j] > max ? s[j] : max;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < valid; ++j) {
    // (s - max) first: exact for the scores near the max, which dominate the sum.
    const float e = detail::exp_approx((s[j] - max) * scale);
    s[j] = e;
    sum += e;
  }
  for (int64_t j = valid; j < keys; ++j) s[j] = 0.f;
  return sum;
}

LCMD_VECTOR_CLONES
void scale_row(float* x, int64_t n, float factor) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

// 64-byte aligned float storage.
struct AlignedFloats {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  explicit AlignedFloats(size_t n) {
    const size_t bytes = (std::max<size_t>(n, 1) * sizeof(float) + 63) / 64 * 64;
    data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!data) throw std::bad_alloc();
  }
  float* get() const { return data.get(); }
};

void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  const std::string shapes =
      "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape());
  if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3)
    throw std::invalid_argument("attention: q, k, v must be [B, S, H*d]; got " + shapes);
  if (k.shape() != v.shape() || q.dim(0) != k.dim(0) || q.dim(2) != k.dim(2))
    throw std::invalid_argument("attention: q [B, Sq, C] needs k and v of shape [B, Sk, C]; got " + shapes);
  if (heads <= 0 || q.dim(2) % heads != 0 || q.dim(2) == 0)
    throw std::invalid_argument("attention: " + std::to_string(q.dim(2)) + " channels cannot be split into " +
                                std::to_string(heads) + " heads (" + shapes + ")");
  if (k.dim(1) == 0 && q.dim(1) > 0) throw std::invalid_argument("attention: no keys (" + shapes + ")");
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  check_attention_inputs(q, k, v, heads);
  const int64_t batch = q.dim(0), queries = q.dim(1), keys = k.dim(1), channels = q.dim(2);
  const int64_t head_dim = channels / heads;
  Tensor out(q.shape());
  if (out.numel() == 0) return out;

  // Query blocks: about kScoreBlockFloats scores each, and at least one task per thread.
  const int threads = num_threads();
  const int64_t target_rows = std::clamp<int64_t>(kScoreBlockFloats / keys, kMinBlockRows, kMaxBlockRows);
  int64_t blocks = (queries + target_rows - 1) / target_rows;
  blocks = std::min(queries, std::max(blocks, (threads + batch * heads - 1) / (batch * heads)));
  const int64_t block_rows = (queries + blocks - 1) / blocks;
  blocks = (queries + block_rows - 1) / block_rows;

  detail::sync_openmp_threads();
  const auto prims = block_primitives({block_rows, keys, head_dim, channels});
  const auto& engine = detail::cpu_engine();

  const size_t k_bytes = prims->scores_pd.weights_desc().get_size(), v_bytes = prims->mix_pd.weights_desc().get_size();
  auto head_offset = [&](int64_t bh) { return (bh / heads) * keys * channels + (bh % heads) * head_dim; };

  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const int64_t tasks = batch * heads * blocks;
  const int team = static_cast<int>(std::min<int64_t>(threads, tasks));
  std::exception_ptr failure;
#pragma omp parallel num_threads(team)
  {
    try {
      AlignedFloats scores(block_rows * keys);
      // This thread's copy of K^T and V of the head it is working on, packed on first use.
      AlignedFloats packed_k(k_bytes / sizeof(float) + 1), packed_v(v_bytes / sizeof(float) + 1);
      const memory k_weights(prims->scores_pd.weights_desc(), engine, packed_k.get());
      const memory v_weights(prims->mix_pd.weights_desc(), engine, packed_v.get());
      int64_t packed_head = -1;
      // A last, partial block is computed on copies padded to block_rows rows, so one
      // primitive serves every block.
      std::unique_ptr<AlignedFloats> q_pad, out_pad;
      std::vector<float> inv_sum(block_rows);
      // Contiguous task ranges per thread, without a worksharing construct: a thread that
      // fails must be able to leave without the others waiting for it at a barrier.
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      for (int64_t task = tasks * t / nt; task < tasks * (t + 1) / nt; ++task) {
        const int64_t bh = task / blocks, b = bh / heads, h = bh % heads;
        if (bh != packed_head) {
          detail::run_primitive(prims->pack_k, prims->pack_k_pd,
                                {{DNNL_ARG_FROM, detail::wrap_memory(prims->pack_k_pd.src_desc(), k.data() + head_offset(bh))},
                                 {DNNL_ARG_TO, k_weights}});
          detail::run_primitive(prims->pack_v, prims->pack_v_pd,
                                {{DNNL_ARG_FROM, detail::wrap_memory(prims->pack_v_pd.src_desc(), v.data() + head_offset(bh))},
                                 {DNNL_ARG_TO, v_weights}});
          packed_head = bh;
        }
        const int64_t row0 = (task % blocks) * block_rows, rows = std::min(block_rows, queries - row0);
        const float* q_block = q.data() + (b * queries + row0) * channels + h * head_dim;
        float* out_block = out.data() + (b * queries + row0) * channels + h * head_dim;
        float* out_target = out_block;
        if (rows < block_rows) {
          if (!q_pad) {
            q_pad = std::make_unique<AlignedFloats>(block_rows * channels);
            out_pad = std::make_unique<AlignedFloats>(block_rows * channels);
            std::memset(q_pad->get(), 0, sizeof(float) * block_rows * channels);
          }
          for (int64_t r = 0; r < rows; ++r)
            std::memcpy(q_pad->get() + r * channels, q_block + r * channels, sizeof(float) * head_dim);
          q_block = q_pad->get();
          out_target = out_pad->get();
        }
        detail::run_primitive(prims->scores, prims->scores_pd,
                              {{DNNL_ARG_SRC, detail::wrap_memory(prims->scores_pd.src_desc(), q_block)},
                               {DNNL_ARG_WEIGHTS, k_weights},
                               {DNNL_ARG_DST, memory(prims->scores_pd.dst_desc(), engine, scores.get())}});
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t valid = causal ? std::min(keys, row0 + r + 1) : keys;
          inv_sum[r] = 1.f / exp_shifted_row(scores.get() + r * keys, keys, valid, scale);
        }
        detail::run_primitive(prims->mix, prims->mix_pd,
                              {{DNNL_ARG_SRC, memory(prims->mix_pd.src_desc(), engine, scores.get())},
                               {DNNL_ARG_WEIGHTS, v_weights},
                               {DNNL_ARG_DST, memory(prims->mix_pd.dst_desc(), engine, out_target)}});
        for (int64_t r = 0; r < rows; ++r) scale_row(out_target + r * channels, head_dim, inv_sum[r]);
        if (out_target != out_block)
          for (int64_t r = 0; r < rows; ++r)
            std::memcpy(out_block + r * channels, out_target + r * channels, sizeof(float) * head_dim);
      }
    } catch (...) {
#pragma omp critical(lcmd_attention_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return out;
}

}  // namespace lcmd::ops
