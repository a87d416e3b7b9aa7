#include "serve/connection_probe.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>

namespace lcmd::serve {

namespace {

// Address and port as cpp-httplib reports them (getnameinfo with NI_NUMERICHOST).
bool numeric_name(const sockaddr_storage& address, socklen_t length, std::string* host, int* port) {
  char buffer[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, buffer, sizeof buffer, nullptr, 0,
                  NI_NUMERICHOST) != 0)
    return false;
  *host = buffer;
  if (address.ss_family == AF_INET)
    *port = ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  else if (address.ss_family == AF_INET6)
    *port = ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  else
    return false;
  return true;
}

bool is_connection(int fd, const std::string& local_addr, int local_port, const std::string& peer_addr, int peer_port) {
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISSOCK(info.st_mode)) return false;
  sockaddr_storage local{}, peer{};
  socklen_t local_length = sizeof local, peer_length = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) return false;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) return false;  // listening
  std::string local_host, peer_host;
  int local_p = 0, peer_p = 0;
  return numeric_name(local, local_length, &local_host, &local_p) &&
         numeric_name(peer, peer_length, &peer_host, &peer_p) && local_p == local_port && peer_p == peer_port &&
         peer_host == peer_addr && (local_addr.empty() || local_host == local_addr);
}

}  // namespace

std::optional<ConnectionProbe> ConnectionProbe::find(const std::string& local_addr, int local_port,
                                                     const std::string& peer_addr, int peer_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return std::nullopt;
  std::optional<ConnectionProbe> found;
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || end == entry->d_name || fd == dirfd(dir)) continue;
    if (is_connection(static_cast<int>(fd), local_addr, local_port, peer_addr, peer_port)) {
      found = ConnectionProbe(static_cast<int>(fd));
      break;
    }
  }
  closedir(dir);
  return found;
}

bool ConnectionProbe::peer_closed() const {
  pollfd p{fd_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

}  // namespace lcmd::serve
