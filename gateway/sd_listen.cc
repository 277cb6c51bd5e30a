// Finding the control socket among the descriptors systemd passed.
#include "gateway/sd_listen.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace ferry::gw {

namespace {

constexpr int kFirstFd = 3;        // SD_LISTEN_FDS_START
constexpr long kMaxFds = 1 << 14;  // far more than any unit passes

// A decimal number with nothing around it; false for "", "12x", "-1".
bool parse_number(const char* text, long& out) {
  if (text == nullptr || *text == '\0') return false;
  std::string_view s(text);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && out >= 0;
}

// What the descriptor is, for matching and for the error message:
// "unix:/run/ferry/ctl.sock", "not a listening stream socket", ...
std::string describe(int fd, bool& listening_unix_stream,
                     std::string& bound_path) {
  listening_unix_stream = false;
  int type = 0, accepting = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return "not a socket";
  len = sizeof accepting;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0)
    accepting = 0;
  sockaddr_un addr{};
  len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return "socket without a name";
  if (addr.sun_family != AF_UNIX) return "not a Unix-domain socket";
  size_t n = len > offsetof(sockaddr_un, sun_path)
                 ? len - offsetof(sockaddr_un, sun_path)
                 : 0;
  // Path names end at the first NUL; abstract names start with one.
  bound_path.assign(addr.sun_path, ::strnlen(addr.sun_path, n));
  std::string what = "unix:" + bound_path;
  if (type != SOCK_STREAM) return what + " (not a stream socket)";
  if (!accepting) return what + " (not listening)";
  listening_unix_stream = true;
  return what;
}

}  // namespace

int inherited_unix_listener(const std::string& path, std::string& error) {
  error.clear();

  // Meant for us at all?
  long pid = 0;
  if (!parse_number(std::getenv("LISTEN_PID"), pid) ||
      pid != static_cast<long>(::getpid())) {
    return -1;
  }
  long count = 0;
  if (!parse_number(std::getenv("LISTEN_FDS"), count) || count > kMaxFds) {
    const char* raw = std::getenv("LISTEN_FDS");
    error = "control socket " + path + ": systemd's LISTEN_FDS is '" +
            (raw ? raw : "") + "', not a count of descriptors";
    return -1;
  }

  // The first listening Unix stream socket bound to exactly that name.
  std::string seen;
  for (int fd = kFirstFd; fd < kFirstFd + count; ++fd) {
    bool usable = false;
    std::string bound;
    std::string what = describe(fd, usable, bound);
    if (usable && bound == path) {
      int flags = ::fcntl(fd, F_GETFD);
      if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) {
        error = "control socket " + path + ": fd " + std::to_string(fd) +
                ": fcntl: " + std::strerror(errno);
        return -1;
      }
      return fd;
    }
    if (!seen.empty()) seen += ", ";
    seen += "fd " + std::to_string(fd) + " " + what;
  }
  error = "control socket " + path +
          ": systemd passed no listening socket for it (passed: " +
          (seen.empty() ? std::string("nothing") : seen) +
          "); make the socket unit's ListenStream= and [ferryd] "
          "control_socket name the same path";
  return -1;
}

}  // namespace ferry::gw
