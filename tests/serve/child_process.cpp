#include "child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

extern char** environ;

namespace lcmd::test {

namespace {

std::vector<std::string> child_environment(const std::vector<std::string>& overrides) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  for (const std::string& o : overrides) {
    const std::string name = o.substr(0, o.find('='));
    std::erase_if(env, [&](const std::string& e) { return e.compare(0, name.size() + 1, name + "=") == 0; });
    if (o.find('=') != std::string::npos) env.push_back(o);
  }
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (std::string& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

}  // namespace

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env_overrides) {
  std::vector<std::string> args = argv, env = child_environment(env_overrides);
  std::vector<char*> arg_pointers = pointers(args), env_pointers = pointers(env);
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {  // the child: only async-signal-safe calls until exec
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, STDIN_FILENO);
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    execve(arg_pointers[0], arg_pointers.data(), env_pointers.data());
    const char message[] = "exec failed\n";
    (void)!write(STDERR_FILENO, message, sizeof message - 1);
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  stdout_reader_ = std::thread([this, fd = out_pipe[0]] { read_into(fd, &stdout_); });
  stderr_reader_ = std::thread([this, fd = err_pipe[0]] { read_into(fd, &stderr_); });
}

ChildProcess::~ChildProcess() {
  if (!status_) wait(std::chrono::milliseconds(0));  // kills a child that still runs
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_reading_ = true;  // a grandchild may hold the pipes open; stop anyway
  }
  stdout_reader_.join();
  stderr_reader_.join();
}

void ChildProcess::read_into(int fd, std::string* target) {
  char buffer[65536];
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_reading_) break;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n <= 0) break;
    std::lock_guard<std::mutex> lock(mutex_);
    target->append(buffer, static_cast<size_t>(n));
    output_changed_.notify_all();
  }
  close(fd);
  std::lock_guard<std::mutex> lock(mutex_);
  --open_streams_;
  if (target == &stdout_) stdout_closed_ = true;
  output_changed_.notify_all();
}

std::optional<std::string> ChildProcess::wait_for_line(const std::string& needle, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  std::optional<std::string> found;
  output_changed_.wait_for(lock, timeout, [&] {
    size_t start = 0;
    for (size_t end; (end = stdout_.find('\n', start)) != std::string::npos; start = end + 1) {
      const std::string line = stdout_.substr(start, end - start);
      if (line.find(needle) != std::string::npos) {
        found = line;
        return true;
      }
    }
    return stdout_closed_;
  });
  return found;
}

void ChildProcess::wait_for_output_end(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  output_changed_.wait_for(lock, timeout, [&] { return open_streams_ == 0; });
}

std::string ChildProcess::stdout_text() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stdout_;
}

std::string ChildProcess::stderr_text() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stderr_;
}

int ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_) return *status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int raw = 0;
  for (;;) {
    const pid_t done = waitpid(pid_, &raw, WNOHANG);
    if (done == pid_) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &raw, 0);
      status_ = -1;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  return *status_;
}

bool ChildProcess::running() {
  if (status_) return false;
  int raw = 0;
  if (waitpid(pid_, &raw, WNOHANG) != pid_) return true;
  status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  return false;
}

void ChildProcess::send_signal(int signal) {
  if (!status_) kill(pid_, signal);
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& env_overrides) {
  ChildProcess child(argv, env_overrides);
  CommandResult result;
  result.status = child.wait(timeout);
  // Output written just before exit may still be in the pipes: wait for both to close.
  child.wait_for_output_end(std::chrono::milliseconds(2000));
  result.out = child.stdout_text();
  result.err = child.stderr_text();
  return result;
}

}  // namespace lcmd::test
