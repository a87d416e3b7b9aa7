// A child process for the serve tests (lcmd serve, lcmd as a Lambda bootstrap, curl, node):
// stdout and stderr are collected by reader threads, every wait is bounded, and the child
// is killed and reaped when the object goes away, so no test leaves a process behind.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace lcmd::test {

class ChildProcess {
 public:
  // argv[0] is the program path. env_overrides: "NAME=value" entries added to (or replacing
  // in) this process's environment; "NAME" alone removes the variable. The child is killed
  // if the thread that started it exits (PR_SET_PDEATHSIG), so start it from the test thread.
  ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env_overrides = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The first stdout line containing `needle` (all lines stay in stdout_text()), or nullopt
  // when none came within the timeout or the output ended.
  std::optional<std::string> wait_for_line(const std::string& needle, std::chrono::milliseconds timeout);
  // Waits until the child's stdout and stderr are closed (its output is complete).
  void wait_for_output_end(std::chrono::milliseconds timeout);
  std::string stdout_text() const;
  std::string stderr_text() const;
  // The exit status: the exit code, or 128 + signal number. After `timeout` the child is
  // killed (SIGKILL) and -1 returned.
  int wait(std::chrono::milliseconds timeout);
  bool running();
  void send_signal(int signal);

 private:
  void read_into(int fd, std::string* target);

  pid_t pid_ = -1;
  std::optional<int> status_;
  mutable std::mutex mutex_;
  std::condition_variable output_changed_;
  std::string stdout_, stderr_;
  int open_streams_ = 2;
  bool stdout_closed_ = false;
  bool stop_reading_ = false;
  std::thread stdout_reader_, stderr_reader_;
};

// Runs a command to completion (bounded by `timeout`, then killed) and returns it.
struct CommandResult {
  int status = -1;
  std::string out, err;
};
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& env_overrides = {});

}  // namespace lcmd::test
