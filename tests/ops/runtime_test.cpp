// Thread count and denormal flushing.
#include <gtest/gtest.h>
#include <omp.h>
#include <sched.h>
#include <xmmintrin.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "ops/ops.h"
#include "ops_test_util.h"

namespace lcmd::ops {
namespace {

using test::random_tensor;
using test::random_vector;

// Restores the thread count a test changed.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(num_threads()) {}
  ~ThreadCountGuard() { set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(Threads, ZeroMeansEveryCoreThisProcessMayUse) {
  ThreadCountGuard guard;
  cpu_set_t set;
  ASSERT_EQ(0, sched_getaffinity(0, sizeof(set), &set));
  set_num_threads(0);
  EXPECT_EQ(num_threads(), CPU_COUNT(&set));
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  EXPECT_EQ(omp_get_max_threads(), 1);  // what oneDNN's OpenMP runtime follows
  EXPECT_THROW(set_num_threads(-1), std::invalid_argument);
}

TEST(Threads, ResultsDoNotDependOnTheThreadCount) {
  ThreadCountGuard guard;
  const Tensor x = random_tensor({2, 24, 24, 64}, 81, -2.f, 3.f);
  const std::vector<float> w = random_vector(64 * 64 * 9, 82), gamma = random_vector(64, 83), beta = random_vector(64, 84);
  const Conv2d conv(w.data(), beta.data(), 64, 64, 3, 1, 1);
  const Tensor q = random_tensor({1, 200, 64}, 85), k = random_tensor({1, 77, 64}, 86);
  auto run = [&] {
    std::vector<Tensor> outs;
    outs.push_back(group_norm(x, 32, 1e-5f, gamma.data(), beta.data(), true));
    outs.push_back(layer_norm(x, 1e-5f, gamma.data(), beta.data()));
    outs.push_back(conv(x));
    outs.push_back(attention(q, k, k, 2, false));
    Tensor g = x.clone();
    gelu_erf_(g);
    outs.push_back(g);
    return outs;
  };
  set_num_threads(1);
  const std::vector<Tensor> one = run();
  set_num_threads(2);
  const std::vector<Tensor> two = run();
  for (size_t i = 0; i < one.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(one[i].shape(), two[i].shape());
    // Elementwise ops and attention rows do the same arithmetic whatever the split; the
    // GroupNorm sums and the conv's reduction order may differ in the last bits.
    EXPECT_TRUE(test::matches_reference(two[i], std::vector<double>(one[i].data(), one[i].data() + one[i].numel()),
                                        1e-6, 2e-6));
  }
}

bool flushes_denormals() {
  volatile float tiny = 1e-39f;  // a denormal
  volatile float product = tiny * 1.0f;
  return product == 0.f;
}

TEST(Denormals, FlushedOnEveryThreadOfTheTeam) {
  ThreadCountGuard guard;
  set_num_threads(2);
  std::vector<unsigned> saved(2, 0);
#pragma omp parallel num_threads(2)
  saved[omp_get_thread_num()] = _mm_getcsr();
  const unsigned saved_caller = _mm_getcsr();

  ASSERT_FALSE(flushes_denormals()) << "the default MXCSR already flushes: this test could not tell";
  enable_flush_denormals();
  EXPECT_TRUE(flushes_denormals());
  std::vector<int> flushed(2, 0);
#pragma omp parallel num_threads(2)
  flushed[omp_get_thread_num()] = flushes_denormals() ? 1 : 0;
  EXPECT_EQ(flushed, (std::vector<int>{1, 1}));

  // Leave the process as it was for the other tests.
#pragma omp parallel num_threads(2)
  _mm_setcsr(saved[omp_get_thread_num()]);
  _mm_setcsr(saved_caller);
}

}  // namespace
}  // namespace lcmd::ops
