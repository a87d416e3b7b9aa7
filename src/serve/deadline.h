// Keeps a Lambda invocation inside its deadline: checked before a run and between denoising
// steps, so a run that cannot finish stops with a timeout error instead of being killed by
// Lambda halfway through writing its response.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "lcmd/engine.h"

namespace lcmd::serve {

int64_t unix_now_ms();

class DeadlineGuard {
 public:
  using Clock = std::function<int64_t()>;  // Unix time in milliseconds

  // margin_ms: time kept free at the end for encoding and posting the response.
  // tail_estimate_ms: how long the work after the last step (VAE decode, PNG) takes;
  // negative when not known yet, then three steps' worth is assumed (the VAE decoder costs
  // about as much as three UNet steps at 512x512).
  DeadlineGuard(int64_t deadline_unix_ms, int64_t margin_ms, double tail_estimate_ms, Clock clock = unix_now_ms);

  // True when there is more than the margin left.
  bool can_start() const;
  // For Engine::generate: after step k of n it projects the end of the run (the slowest
  // step rate seen so far for the remaining steps, plus the tail) and answers false when
  // that end is past the deadline minus the margin.
  ProgressCallback progress_callback();
  // Why the run stopped, for the timeout error message.
  std::string explain() const;

 private:
  bool on_step(int step, int total);

  int64_t deadline_ms_, margin_ms_;
  double tail_ms_;
  Clock clock_;
  int64_t start_ms_;
  int64_t previous_step_end_ms_ = 0;
  double slowest_step_ms_ = 0;
  int stopped_after_step_ = 0, total_steps_ = 0;
};

}  // namespace lcmd::serve
