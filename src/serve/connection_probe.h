// Notices when the client of a waiting HTTP request has gone away. cpp-httplib (0.11) does
// not give handlers their socket, so the probe finds it among this process's descriptors by
// the connection's addresses: the pair (local address:port, peer address:port) names one
// TCP connection, and that descriptor stays open while its handler runs.
#pragma once
#include <optional>
#include <string>

namespace lcmd::serve {

class ConnectionProbe {
 public:
  // The socket of the connection, or nullopt when none matches (then nothing can be probed).
  static std::optional<ConnectionProbe> find(const std::string& local_addr, int local_port,
                                             const std::string& peer_addr, int peer_port);

  // True once the peer has closed or reset the connection (a FIN or an error is pending).
  bool peer_closed() const;
  int fd() const { return fd_; }

 private:
  explicit ConnectionProbe(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace lcmd::serve
