#include "modem/lock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>

#include "modem/error.h"

namespace ferry::modem {
namespace {

std::mutex registry_mutex;
std::set<std::string>& registry() {  // REQUIRES: registry_mutex held
  static std::set<std::string> held;
  return held;
}

std::error_code last_error() { return {errno, std::system_category()}; }

// PID stored in a lock file: ASCII (any width) or, from old programs, a
// 4-byte binary int.  Returns 0 when the file is unreadable or garbage.
pid_t read_lock_pid(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[32] = {};
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  bool ascii = true;
  for (ssize_t i = 0; i < n; ++i)
    if (std::strchr("0123456789 \n", buf[i]) == nullptr) ascii = false;
  if (n == 4 && !ascii) {
    int binary = 0;
    static_assert(sizeof binary == 4);
    std::copy(buf, buf + 4, reinterpret_cast<char*>(&binary));
    return binary > 0 ? binary : 0;
  }
  if (n <= 0) return 0;
  char* end = nullptr;
  long v = std::strtol(buf, &end, 10);
  if (end == buf || v <= 0 || v > 0x7fffffffL) return 0;
  return static_cast<pid_t>(v);
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

std::string uucp_lock_name(std::string_view device) {
  std::string_view rest = device;
  if (auto pos = device.find("dev/"); pos != std::string_view::npos) {
    rest = device.substr(pos + 4);
  } else if (auto slash = device.rfind('/'); slash != std::string_view::npos) {
    rest = device.substr(slash + 1);
  }
  std::string name = "LCK..";
  for (char c : rest) name += c == '/' ? '_' : c;
  return name;
}

UucpLock::UucpLock(UucpLock&& other) noexcept
    : path_(std::exchange(other.path_, std::string())) {}

UucpLock& UucpLock::operator=(UucpLock&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::exchange(other.path_, std::string());
  }
  return *this;
}

std::error_code UucpLock::acquire(const std::string& lock_dir,
                                  std::string_view device, pid_t* holder,
                                  pid_t* stale_pid) {
  release();
  if (holder) *holder = 0;
  if (stale_pid) *stale_pid = 0;
  const std::string path = lock_dir + "/" + uucp_lock_name(device);
  const pid_t self = ::getpid();
  static std::atomic<unsigned> counter{0};
  const std::string tmp = lock_dir + "/LTMP." + std::to_string(self) + "." +
                          std::to_string(counter++);

  // Write our PID to a private file first, so the lock appears complete.
  char content[16];
  std::snprintf(content, sizeof content, "%10d\n", static_cast<int>(self));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return last_error();
  ::fchmod(fd, 0644);  // world-readable whatever the umask (FHS)
  bool written = ::write(fd, content, 11) == 11;
  std::error_code write_ec = written ? std::error_code() : last_error();
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    return write_ec ? write_ec : make_error_code(std::errc::io_error);
  }

  // link() is atomic: it fails with EEXIST if anyone holds the name.  Two
  // rounds: the second follows the removal of a stale lock.
  std::error_code result = make_error_code(ModemErrc::port_locked);
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (::link(tmp.c_str(), path.c_str()) == 0) {
      std::lock_guard<std::mutex> guard(registry_mutex);
      registry().insert(path);
      path_ = path;
      result = {};
      break;
    }
    if (errno != EEXIST) {
      result = last_error();
      break;
    }
    pid_t pid = read_lock_pid(path);
    bool ours_now = false;
    if (pid == self) {
      std::lock_guard<std::mutex> guard(registry_mutex);
      ours_now = registry().count(path) != 0;
    }
    bool live = pid > 0 && (pid == self ? ours_now : process_alive(pid));
    if (live) {
      if (holder) *holder = pid;
      result = make_error_code(ModemErrc::port_locked);
      break;
    }
    // Stale: the holder is gone (or the file is garbage).  Another process
    // may be taking it over at the same moment; whoever links first wins.
    if (stale_pid) *stale_pid = pid;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      result = last_error();
      break;
    }
  }
  ::unlink(tmp.c_str());
  return result;
}

void UucpLock::release() {
  if (path_.empty()) return;
  // Only remove the file if it still carries our PID: a lock broken and
  // retaken by someone else is theirs now.
  if (read_lock_pid(path_) == ::getpid()) ::unlink(path_.c_str());
  {
    std::lock_guard<std::mutex> guard(registry_mutex);
    registry().erase(path_);
  }
  path_.clear();
}

}  // namespace ferry::modem
