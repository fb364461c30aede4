// Whether a request's client is still connected, for a handler that writes nothing until its
// answer is complete (a completion that is not streamed: its status is only known at the end)
// and must still notice its client leaving, to free its slot. cpp-httplib 0.11 shows a handler
// only the two ends' addresses, not its socket: the socket is the process's one TCP connection
// with those two ends, found once among the open descriptors.
#pragma once
#include <httplib.h>

namespace lora::serve {

class ConnectionWatch {
 public:
  explicit ConnectionWatch(const httplib::Request& request);
  // False once the client has closed its side (or the connection failed); true while it is open
  // and waiting, or when the connection could not be found. Reads nothing from it.
  bool client_connected() const;

 private:
  int fd_ = -1;  // the request's socket, open while its handler runs; -1: not found
};

}  // namespace lora::serve
