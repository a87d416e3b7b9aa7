#include "serve/deadline.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace lcmd::serve {

int64_t unix_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

DeadlineGuard::DeadlineGuard(int64_t deadline_unix_ms, int64_t margin_ms, double tail_estimate_ms, Clock clock)
    : deadline_ms_(deadline_unix_ms),
      margin_ms_(margin_ms),
      tail_ms_(tail_estimate_ms),
      clock_(std::move(clock)),
      start_ms_(clock_()),
      previous_step_end_ms_(start_ms_) {}

bool DeadlineGuard::can_start() const { return deadline_ms_ - clock_() > margin_ms_; }

ProgressCallback DeadlineGuard::progress_callback() {
  return [this](int step, int total) { return on_step(step, total); };
}

bool DeadlineGuard::on_step(int step, int total) {
  const int64_t now = clock_();
  // The first "step" also holds the text encoder, so it over-estimates: on the safe side.
  slowest_step_ms_ = std::max(slowest_step_ms_, static_cast<double>(now - previous_step_end_ms_));
  previous_step_end_ms_ = now;
  const double tail = tail_ms_ >= 0 ? tail_ms_ : 3 * slowest_step_ms_;
  const double projected_end = now + slowest_step_ms_ * (total - step) + tail;
  if (projected_end <= static_cast<double>(deadline_ms_ - margin_ms_)) return true;
  stopped_after_step_ = step;
  total_steps_ = total;
  return false;
}

std::string DeadlineGuard::explain() const {
  const int64_t left = deadline_ms_ - clock_();
  if (stopped_after_step_ == 0)
    return "the invocation deadline leaves " + std::to_string(left) + " ms, less than the " +
           std::to_string(margin_ms_) + " ms kept for the response; the request was not started";
  return "stopped after denoising step " + std::to_string(stopped_after_step_) + " of " + std::to_string(total_steps_) +
         ": the remaining steps would end past the invocation deadline (" + std::to_string(left) +
         " ms left); use fewer steps, a smaller size, or a longer function timeout";
}

}  // namespace lcmd::serve
