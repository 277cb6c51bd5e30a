// The exec link with real commands run by /bin/sh: bytes both ways, the
// command's stderr in the log, its exit status, the escalation to
// SIGTERM and SIGKILL, and what descriptors the command inherits.
#include "gateway/exec_link.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "gateway/link_session.h"

namespace ferry::gw {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Short waits: the tests do not sit out ferryd's five seconds.
ExecLinkOptions quick() {
  ExecLinkOptions o;
  o.grace = 300ms;
  o.term_grace = 300ms;
  return o;
}

// Runs `body` on a fresh io_context until it and everything it started
// are done.
void run(std::function<asio::awaitable<void>(asio::io_context&)> body) {
  asio::io_context io;
  std::exception_ptr failure;
  asio::co_spawn(io, body(io),
                 [&](std::exception_ptr e) { failure = std::move(e); });
  io.run();
  if (failure) std::rethrow_exception(failure);
}

std::unique_ptr<ExecLink> start(asio::io_context& io, const std::string& cmd,
                                const ExecLinkOptions& o = quick()) {
  std::string error;
  auto link = ExecLink::start(io.get_executor(), "peer-x", cmd, o, error);
  EXPECT_TRUE(link) << error;
  return link;
}

// Everything the command writes until it closes its stdout.
asio::awaitable<std::string> read_all(ExecLink& link) {
  std::string got;
  char buf[4096];
  for (;;) {
    auto [ec, n] = co_await link.socket().async_read_some(asio::buffer(buf),
                                                          kTuple);
    got.append(buf, n);
    if (ec) break;
  }
  co_return got;
}

// True when `pid` is no child of ours any more (reaped).
bool reaped(pid_t pid) {
  int st;
  return ::waitpid(pid, &st, WNOHANG) < 0 && errno == ECHILD;
}

// A process that is gone or a zombie (killed, waiting for init).
bool dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() &&
         line[paren + 2] == 'Z';
}

TEST(ExecLink, BytesCrossBothWaysThroughCat) {
  std::string sent;
  for (int i = 0; i < 20000; ++i) sent += "line " + std::to_string(i) + "\n";
  std::string echoed;
  ExecStatus st;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io, "cat");
    if (!link) co_return;
    // Write and read at once: cat's pipe would fill otherwise.
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await asio::async_write(link->socket(), asio::buffer(sent),
                                     kTuple);
          boost::system::error_code ignored;
          link->socket().shutdown(asio::socket_base::shutdown_send, ignored);
        },
        asio::detached);
    echoed = co_await read_all(*link);
    st = co_await link->finish();
    EXPECT_TRUE(reaped(link->pid()));
  });
  EXPECT_EQ(echoed.size(), sent.size());
  EXPECT_TRUE(echoed == sent);
  EXPECT_EQ(st.kind, ExecStatus::Kind::exited);
  EXPECT_EQ(st.code, 0);
}

TEST(ExecLink, LinkTransportRunsOverTheCommand) {
  // What the link session sees: make_link_transport on the socket.  The
  // command answers like a greeting server, then echoes one line back.
  std::string greeting, echoed;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io,
                      "printf '220 far ferry\\r\\n'; read line; "
                      "printf '%s\\n' \"got $line\"");
    if (!link) co_return;
    auto ready = co_await link->wait_ready(5s);
    EXPECT_EQ(ready, ExecLink::Ready::data);
    auto t = make_link_transport(link->socket());
    std::error_code ec;
    char buf[256];
    size_t n = co_await t->read_some(asio::buffer(buf), ec);
    greeting.assign(buf, n);
    std::string hello = "EHLO a.example\n";
    co_await t->write(asio::buffer(hello), ec);
    EXPECT_FALSE(ec);
    while (!ec) {
      n = co_await t->read_some(asio::buffer(buf), ec);
      echoed.append(buf, n);
    }
    EXPECT_EQ(t->bytes_out(), hello.size());
    co_await link->finish();
  });
  EXPECT_EQ(greeting, "220 far ferry\r\n");
  EXPECT_EQ(echoed, "got EHLO a.example\n");
}

TEST(ExecLink, StderrLinesAreLoggedUnderThePeer) {
  testing::internal::CaptureStderr();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io,
                      "echo 'ssh: connect to host office-b: refused' >&2; "
                      "echo >&2; printf 'no newline' >&2; exit 0");
    if (!link) co_return;
    co_await link->finish();
    EXPECT_EQ(link->last_stderr(), "no newline");
  });
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("peer-x: event=exec-stderr "
                     "text=\"ssh: connect to host office-b: refused\"\n"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("peer-x: event=exec-stderr text=\"no newline\"\n"),
            std::string::npos)
      << log;
  // The empty line is not logged; the exit line comes after the text.
  EXPECT_EQ(log.find("text=\"\""), std::string::npos) << log;
  EXPECT_LT(log.find("no newline"), log.find("event=exec-exit status=0"))
      << log;
}

TEST(ExecLink, ExitStatusIsReportedAndLoggedOnce) {
  ExecStatus st;
  ExecLink::Ready ready{};
  testing::internal::CaptureStderr();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io, "exit 3");
    if (!link) co_return;
    ready = co_await link->wait_ready(5s);
    st = co_await link->finish();
    ExecStatus again = co_await link->finish();
    EXPECT_EQ(again.code, 3);
  });
  std::string log = testing::internal::GetCapturedStderr();
  // Its stdout closed as it exited: either is seen first.
  EXPECT_TRUE(ready == ExecLink::Ready::eof ||
              ready == ExecLink::Ready::exited);
  EXPECT_EQ(st.kind, ExecStatus::Kind::exited);
  EXPECT_EQ(st.code, 3);
  EXPECT_EQ(st.describe(), "exited with status 3");
  const std::string exit_line = "peer-x: event=exec-exit status=3\n";
  size_t at = log.find(exit_line);
  ASSERT_NE(at, std::string::npos) << log;
  EXPECT_EQ(log.find("event=exec-exit", at + exit_line.size()),
            std::string::npos)
      << log;
}

TEST(ExecLink, MissingProgramReadsAsCommandNotFound) {
  ExecStatus st;
  std::string last;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io, "no-such-program-ferry-test --flag");
    if (!link) co_return;
    co_await link->wait_ready(5s);
    st = co_await link->finish();
    last = link->last_stderr();
  });
  EXPECT_EQ(st.code, 127);
  EXPECT_EQ(st.describe(), "exited with status 127 (command not found)");
  EXPECT_NE(last.find("no-such-program-ferry-test"), std::string::npos)
      << last;
}

TEST(ExecLink, MissingShellIsAnErrorNamingIt) {
  asio::io_context io;
  ExecLinkOptions o = quick();
  o.shell = "/nonexistent/ferry-sh";
  std::string error;
  auto link = ExecLink::start(io.get_executor(), "peer-x", "true", o, error);
  EXPECT_FALSE(link);
  EXPECT_NE(error.find("/nonexistent/ferry-sh"), std::string::npos) << error;
  EXPECT_NE(error.find("No such file"), std::string::npos) << error;
}

TEST(ExecLink, CommandIgnoringEofAndTermIsKilledAndReaped) {
  // The shell and its background sleep ignore SIGTERM and never read
  // stdin; the sleep's pid comes over the link.
  ExecStatus st;
  pid_t pid = -1, sleeper = -1;
  std::chrono::steady_clock::duration took{};
  testing::internal::CaptureStderr();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io, "trap '' TERM; sleep 60 & echo $!; wait");
    if (!link) co_return;
    pid = link->pid();
    std::string line;
    char c;
    while (line.empty() || line.back() != '\n') {
      auto [ec, n] = co_await link->socket().async_read_some(
          asio::buffer(&c, 1), kTuple);
      if (ec) break;
      line += c;
    }
    sleeper = std::atoi(line.c_str());
    auto t0 = std::chrono::steady_clock::now();
    st = co_await link->finish();
    took = std::chrono::steady_clock::now() - t0;
  });
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(st.kind, ExecStatus::Kind::signalled);
  EXPECT_EQ(st.code, SIGKILL);
  // grace + term_grace is 0.6 s; the machine is busy, so be generous.
  EXPECT_GE(took, 550ms);
  EXPECT_LT(took, 5s);
  EXPECT_TRUE(reaped(pid));
  ASSERT_GT(sleeper, 0);
  EXPECT_TRUE(dead(sleeper)) << "the group's sleep survived";
  EXPECT_NE(log.find("peer-x: event=exec-kill signal=TERM"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("peer-x: event=exec-kill signal=KILL"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("peer-x: event=exec-exit signal=KILL\n"),
            std::string::npos)
      << log;
}

TEST(ExecLink, BackgroundChildTheShellLeftBehindIsStopped) {
  // "cmd & exit 5": the shell ends at once, its child stays in the group.
  ExecStatus st;
  pid_t sleeper = -1;
  testing::internal::CaptureStderr();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io, "sleep 60 & echo $!; exit 5");
    if (!link) co_return;
    std::string line;
    char c;
    while (line.empty() || line.back() != '\n') {
      auto [ec, n] = co_await link->socket().async_read_some(
          asio::buffer(&c, 1), kTuple);
      if (ec) break;
      line += c;
    }
    sleeper = std::atoi(line.c_str());
    st = co_await link->finish();
  });
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(st.kind, ExecStatus::Kind::exited);
  EXPECT_EQ(st.code, 5);
  ASSERT_GT(sleeper, 0);
  // Reparented to init, which reaps it; give it a moment.
  for (int i = 0; i < 50 && !dead(sleeper); ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(dead(sleeper)) << "the background sleep survived";
  EXPECT_NE(log.find("left running in the command's group"),
            std::string::npos)
      << log;
}

TEST(ExecLink, CommandEndingOnTermStopsThere) {
  // Ignores end of file but not SIGTERM: no SIGKILL needed.
  ExecStatus st;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io, "exec sleep 60");
    if (!link) co_return;
    st = co_await link->finish();
  });
  EXPECT_EQ(st.kind, ExecStatus::Kind::signalled);
  EXPECT_EQ(st.code, SIGTERM);
  EXPECT_EQ(st.log_value(), "signal=TERM");
}

TEST(ExecLink, DestroyedWithoutFinishLeavesNoChild) {
  pid_t pid = -1;
  {
    asio::io_context io;
    std::string error;
    auto link = ExecLink::start(io.get_executor(), "peer-x", "sleep 60",
                                quick(), error);
    ASSERT_TRUE(link) << error;
    pid = link->pid();
  }
  EXPECT_TRUE(reaped(pid));
}

TEST(ExecLink, CommandInheritsOnlyTheLinkAndItsStderr) {
  // A descriptor ferryd left inheritable (no O_CLOEXEC) must not reach
  // the command either.
  int stray = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(stray, 3);
  std::string fds, kinds;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto link = start(io,
                      "ls /proc/$$/fd; readlink /proc/$$/fd/0 "
                      "/proc/$$/fd/1 /proc/$$/fd/2");
    if (!link) co_return;
    std::string all = co_await read_all(*link);
    co_await link->finish();
    std::istringstream in(all);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find(':') == std::string::npos)
        fds += line + " ";
      else
        kinds += line.substr(0, line.find(':')) + " ";
    }
  });
  ::close(stray);
  EXPECT_EQ(fds, "0 1 2 ");
  EXPECT_EQ(kinds, "socket socket pipe ");
}

}  // namespace
}  // namespace ferry::gw
