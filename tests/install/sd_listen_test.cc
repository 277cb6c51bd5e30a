// gateway/sd_listen.h: finding the control socket systemd passed.  The
// protocol cases set up LISTEN_PID/LISTEN_FDS and descriptors 3.. in a
// forked child (so the test runner's own descriptors and environment are
// untouched); the last case lets systemd's own systemd-socket-activate
// start a probe program that uses the function, as systemd would start
// ferryd, and talks to it through the socket.
#include "gateway/sd_listen.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;

class SdListen : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-sdlisten-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A socket bound to `path`; listening unless told otherwise.
  static int unix_socket(const std::string& path, int type = SOCK_STREAM,
                         bool listening = true) {
    int fd = ::socket(AF_UNIX, type, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return -1;
    if (listening && ::listen(fd, 4) != 0) return -1;
    return fd;
  }

  // In a child: `setup` opens sockets and returns them in order, they are
  // moved to 3, 4, ...; LISTEN_* are set (pid "self" means ours); then the
  // function is asked for `path`.  The child reports "fd=N cloexec=B" or
  // "error=...".
  static std::string run(const std::function<std::vector<int>()>& setup,
                         const std::string& path,
                         const std::string& pid = "self",
                         const std::string& count = "") {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return "pipe failed";
    pid_t child = ::fork();
    if (child == 0) {
      std::vector<int> fds = setup();
      // Park the pipe and the sockets above the range, then move them in.
      int out = ::fcntl(p[1], F_DUPFD_CLOEXEC, 100);
      std::vector<int> high;
      for (int fd : fds) high.push_back(::fcntl(fd, F_DUPFD, 200));
      for (size_t i = 0; i < high.size(); ++i)
        ::dup2(high[i], 3 + static_cast<int>(i));
      std::string pid_text = pid == "self" ? std::to_string(::getpid()) : pid;
      ::setenv("LISTEN_PID", pid_text.c_str(), 1);
      std::string n = count.empty() ? std::to_string(fds.size()) : count;
      ::setenv("LISTEN_FDS", n.c_str(), 1);
      std::string error;
      int fd = inherited_unix_listener(path, error);
      std::string report;
      if (fd >= 0) {
        int flags = ::fcntl(fd, F_GETFD);
        report = "fd=" + std::to_string(fd) +
                 " cloexec=" + ((flags & FD_CLOEXEC) ? "yes" : "no");
      } else {
        report = "error=" + error;
      }
      (void)!::write(out, report.data(), report.size());
      ::_exit(0);
    }
    ::close(p[1]);
    std::string got;
    char buf[1024];
    ssize_t r;
    while ((r = ::read(p[0], buf, sizeof buf)) > 0) got.append(buf, r);
    ::close(p[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    return got;
  }

  std::string dir_;
};

TEST_F(SdListen, FindsTheControlSocketAmongOthersAndSetsCloexec) {
  std::string ctl = dir_ + "/ctl.sock";
  std::string other = dir_ + "/other.sock";
  std::string got = run(
      [&] {
        int tcp = ::socket(AF_INET, SOCK_STREAM, 0);
        return std::vector<int>{unix_socket(other), tcp, unix_socket(ctl)};
      },
      ctl);
  EXPECT_EQ(got, "fd=5 cloexec=yes");
}

TEST_F(SdListen, NothingPassedIsNotAnError) {
  // LISTEN_PID names another process: the sockets are not ours.
  std::string ctl = dir_ + "/ctl.sock";
  std::string got =
      run([&] { return std::vector<int>{unix_socket(ctl)}; }, ctl, "1");
  EXPECT_EQ(got, "error=");
}

TEST_F(SdListen, ASocketForAnotherPathNamesWhatWasPassed) {
  std::string ctl = dir_ + "/ctl.sock";
  std::string other = dir_ + "/elsewhere.sock";
  std::string got =
      run([&] { return std::vector<int>{unix_socket(other)}; }, ctl);
  EXPECT_NE(got.find("error=control socket " + ctl), std::string::npos) << got;
  EXPECT_NE(got.find("fd 3 unix:" + other), std::string::npos) << got;
  EXPECT_NE(got.find("ListenStream="), std::string::npos) << got;
}

TEST_F(SdListen, ADatagramOrUnlistenedSocketIsNotTaken) {
  std::string ctl = dir_ + "/ctl.sock";
  std::string got =
      run([&] { return std::vector<int>{unix_socket(ctl, SOCK_DGRAM, false)}; },
          ctl);
  EXPECT_NE(got.find("not a stream socket"), std::string::npos) << got;
  fs::remove(ctl);
  got = run(
      [&] { return std::vector<int>{unix_socket(ctl, SOCK_STREAM, false)}; },
      ctl);
  EXPECT_NE(got.find("not listening"), std::string::npos) << got;
}

TEST_F(SdListen, MalformedListenFdsIsAnError) {
  std::string ctl = dir_ + "/ctl.sock";
  std::string got = run([&] { return std::vector<int>{unix_socket(ctl)}; }, ctl,
                        "self", "1x");
  EXPECT_NE(got.find("LISTEN_FDS is '1x'"), std::string::npos) << got;
}

// The real thing: systemd-socket-activate binds the socket, passes it the
// way systemd does, and starts the probe when the first client connects.
TEST_F(SdListen, SystemdSocketActivateHandsTheSocketToTheDaemon) {
  const char* activator = "/usr/bin/systemd-socket-activate";
  if (::access(activator, X_OK) != 0)
    GTEST_SKIP() << "systemd-socket-activate not installed";
  std::string ctl = dir_ + "/ctl.sock";
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);  // its "Listening on ..." chatter
    ::dup2(null, 2);
    ::execl(activator, activator, "-l", ctl.c_str(), FERRY_SD_LISTEN_PROBE,
            ctl.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }

  // Connect once the socket is there (bounded wait), read the reply.
  int c = -1;
  for (int i = 0; i < 200 && c < 0; ++i) {
    if (fs::exists(ctl)) {
      c = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::strncpy(sa.sun_path, ctl.c_str(), sizeof sa.sun_path - 1);
      if (::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(c);
        c = -1;
      }
    }
    if (c < 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(c, 0) << "no socket at " << ctl;
  std::string reply;
  pollfd pfd{c, POLLIN, 0};
  char buf[64];
  while (::poll(&pfd, 1, 10000) > 0) {
    ssize_t n = ::read(c, buf, sizeof buf);
    if (n <= 0) break;
    reply.append(buf, n);
  }
  ::close(c);
  int status = 0;
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) break;
    if (i == 199) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(reply, "fd=3\n");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace ferry::gw
