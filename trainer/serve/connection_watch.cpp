#include "trainer/serve/connection_watch.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <string>
#include <system_error>

namespace lora::serve {

namespace {

// The numeric host and port of a socket's end, as httplib writes them into a Request (port -1
// when it is not an IP socket or has no such end).
std::pair<std::string, int> end_of(int fd, bool peer) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  if ((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) != 0) return {"", -1};
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return {"", -1};
  char host[NI_MAXHOST] = {}, port[NI_MAXSERV] = {};
  if (getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return {"", -1};
  return {host, std::stoi(port)};
}

}  // namespace

ConnectionWatch::ConnectionWatch(const httplib::Request& request) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const std::string name = entry.path().filename().string();
    int fd = -1;
    if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc()) continue;
    if (end_of(fd, false).second != request.local_port) continue;
    if (end_of(fd, true) != std::pair(request.remote_addr, request.remote_port)) continue;
    fd_ = fd;
    return;
  }
}

bool ConnectionWatch::client_connected() const {
  if (fd_ < 0) return true;
  pollfd p{fd_, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return true;  // nothing happened on it
  if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return false;
  // Readable: more bytes (a pipelined request: still there) or the end of the stream.
  char byte = 0;
  const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

}  // namespace lora::serve
