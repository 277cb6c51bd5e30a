// A stand-in for ferryd under socket activation: finds the control socket
// systemd (here systemd-socket-activate) passed for argv[1], accepts one
// connection on it and answers "fd=N" (the descriptor it found), then
// exits 0.  Exits 1 with the error on standard error when nothing usable
// was passed.  Used by tests/install/sd_listen_test.cc.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "gateway/sd_listen.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: sd_listen_probe SOCKET-PATH\n");
    return 2;
  }
  std::string error;
  int fd = ferry::gw::inherited_unix_listener(argv[1], error);
  if (fd < 0) {
    std::fprintf(stderr, "sd_listen_probe: %s\n",
                 error.empty() ? "nothing passed" : error.c_str());
    return 1;
  }
  int c = ::accept(fd, nullptr, nullptr);
  if (c < 0) {
    std::perror("sd_listen_probe: accept");
    return 1;
  }
  std::string reply = "fd=" + std::to_string(fd) + "\n";
  (void)!::write(c, reply.data(), reply.size());
  ::close(c);
  return 0;
}
