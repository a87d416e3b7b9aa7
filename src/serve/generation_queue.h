// The HTTP server's admission control: one generation runs at a time (it uses every core),
// on one dedicated worker thread, and further requests wait in a bounded FIFO queue. Past
// the bound a request is refused at once (429 + Retry-After) rather than queued forever.
// Running every generation on the same thread also keeps one OpenMP team and one set of
// per-thread scratch buffers, instead of one per HTTP connection thread.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "serve/image_service.h"

namespace lcmd::serve {

class GenerationQueue {
 public:
  struct Ticket;

  GenerationQueue(ImageService& service, size_t max_waiting);
  ~GenerationQueue();  // close(), then waits for the running generation
  GenerationQueue(const GenerationQueue&) = delete;
  GenerationQueue& operator=(const GenerationQueue&) = delete;

  // Queues the request, or throws ApiError: 429 with a Retry-After estimate when max_waiting
  // requests already wait, 503 after close().
  std::shared_ptr<Ticket> submit(GenerateRequest request);

  // Waits for the ticket's generation and returns it (or rethrows its error). `still_wanted`
  // is asked every `poll`; when it says no, the ticket is abandoned (dropped from the queue,
  // or stopped at the next denoising step if it runs) and nullopt is returned.
  std::optional<GenerateOutcome> wait(const std::shared_ptr<Ticket>& ticket, const std::function<bool()>& still_wanted,
                                      std::chrono::milliseconds poll = std::chrono::milliseconds(100));

  // Refuses new requests and fails the waiting ones with 503; the running one finishes.
  void close();
  // Blocks until no generation runs and none waits (after close(): the worker is idle for good).
  void wait_until_idle();

  size_t waiting() const;
  bool running() const;
  size_t capacity() const { return max_waiting_; }
  uint64_t dropped() const;  // requests abandoned by their client while waiting

 private:
  void work();
  int retry_after_seconds() const;  // needs mutex_

  ImageService& service_;
  const size_t max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::shared_ptr<Ticket>> waiting_;
  bool running_ = false, closed_ = false;
  uint64_t dropped_ = 0;
  double average_run_seconds_ = 1.0;  // moving average, for Retry-After
  std::thread worker_;
};

}  // namespace lcmd::serve
