#include "serve/generation_queue.h"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace lcmd::serve {

struct GenerationQueue::Ticket {
  enum class State { Waiting, Running, Done };
  GenerateRequest request;
  std::chrono::steady_clock::time_point queued_at = std::chrono::steady_clock::now();
  State state = State::Waiting;
  std::optional<GenerateOutcome> outcome;
  std::exception_ptr error;
  std::atomic<bool> abandoned{false};  // read by the progress callback while it runs
};

GenerationQueue::GenerationQueue(ImageService& service, size_t max_waiting)
    : service_(service), max_waiting_(max_waiting), worker_([this] { work(); }) {}

GenerationQueue::~GenerationQueue() {
  close();
  worker_.join();
}

int GenerationQueue::retry_after_seconds() const {
  const double seconds = (waiting_.size() + (running_ ? 1 : 0)) * average_run_seconds_;
  return std::clamp(static_cast<int>(std::ceil(seconds)), 1, 3600);
}

std::shared_ptr<GenerationQueue::Ticket> GenerationQueue::submit(GenerateRequest request) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) throw shutting_down("the server is shutting down and takes no new requests");
  if (waiting_.size() >= max_waiting_)
    throw queue_full("the queue is full (" + std::to_string(max_waiting_) + " requests waiting); retry later",
                     retry_after_seconds());
  auto ticket = std::make_shared<Ticket>();
  ticket->request = std::move(request);
  waiting_.push_back(ticket);
  changed_.notify_all();
  return ticket;
}

std::optional<GenerateOutcome> GenerationQueue::wait(const std::shared_ptr<Ticket>& ticket,
                                                     const std::function<bool()>& still_wanted,
                                                     std::chrono::milliseconds poll) {
  std::unique_lock<std::mutex> lock(mutex_);
  while (ticket->state != Ticket::State::Done) {
    if (changed_.wait_for(lock, poll, [&] { return ticket->state == Ticket::State::Done; })) break;
    lock.unlock();
    const bool wanted = still_wanted();  // may do a system call: not under the lock
    lock.lock();
    if (wanted || ticket->state == Ticket::State::Done) continue;
    ticket->abandoned = true;
    if (ticket->state == Ticket::State::Waiting) {
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), ticket));
      ++dropped_;
      changed_.notify_all();
    }
    return std::nullopt;
  }
  if (ticket->error) std::rethrow_exception(ticket->error);
  return std::move(ticket->outcome);
}

void GenerationQueue::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return closed_ || !waiting_.empty(); });
    if (waiting_.empty()) return;  // closed and drained
    const std::shared_ptr<Ticket> ticket = waiting_.front();
    waiting_.pop_front();
    ticket->state = Ticket::State::Running;
    running_ = true;
    const auto started = std::chrono::steady_clock::now();
    lock.unlock();
    std::optional<GenerateOutcome> outcome;
    std::exception_ptr error;
    try {
      outcome = service_.generate(ticket->request, [&ticket](int, int) { return !ticket->abandoned.load(); });
      outcome->queue_ms = std::chrono::duration<double, std::milli>(started - ticket->queued_at).count();
    } catch (...) {
      error = std::current_exception();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    lock.lock();
    if (outcome && !outcome->result_cached) average_run_seconds_ = 0.7 * average_run_seconds_ + 0.3 * seconds;
    ticket->outcome = std::move(outcome);
    ticket->error = error;
    ticket->state = Ticket::State::Done;
    running_ = false;
    changed_.notify_all();
  }
}

void GenerationQueue::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  for (const auto& ticket : waiting_) {
    ticket->error = std::make_exception_ptr(shutting_down("the server is shutting down; the request was not started"));
    ticket->state = Ticket::State::Done;
  }
  waiting_.clear();
  changed_.notify_all();
}

void GenerationQueue::wait_until_idle() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !running_ && waiting_.empty(); });
}

size_t GenerationQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_.size();
}

bool GenerationQueue::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

uint64_t GenerationQueue::dropped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dropped_;
}

}  // namespace lcmd::serve
