// The exec link (see exec_link.h).

#include "gateway/exec_link.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <utility>

#include "gateway/log.h"

extern char** environ;

namespace ferry::gw {

namespace asio = boost::asio;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// How a waitpid() status says the child ended; "unknown" for a stop.
ExecStatus status_of(int st) {
  ExecStatus s;
  if (WIFEXITED(st)) {
    s.kind = ExecStatus::Kind::exited;
    s.code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    s.kind = ExecStatus::Kind::signalled;
    s.code = WTERMSIG(st);
  }
  return s;
}

// Waits (blocking) until `pid` has ended and collects it.
ExecStatus reap_blocking(pid_t pid) {
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &st, 0);
  } while (r < 0 && errno == EINTR);
  return r == pid ? status_of(st) : ExecStatus{};
}

// After the child is reaped, how long its stderr may take to reach end of
// file (a grandchild may still hold the pipe; we stop listening then).
constexpr std::chrono::milliseconds kStderrDrain{500};

std::string errno_text(int e) { return std::string(::strerror(e)); }

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? std::string(abbrev) : std::to_string(sig);
}

// The child's descriptors go to 0, 1 and 2 by dup2; a source already
// below 3 would be overwritten by an earlier dup2, so move it up.
bool lift_above_stdio(int& fd) {
  if (fd > 2) return true;
  int up = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (up < 0) return false;
  ::close(fd);
  fd = up;
  return true;
}

// Closes a descriptor on every path out of start().
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

}  // namespace

// ---- ExecStatus ---------------------------------------------------------

std::string ExecStatus::log_value() const {
  switch (kind) {
    case Kind::exited:
      return "status=" + std::to_string(code);
    case Kind::signalled:
      return "signal=" + signal_name(code);
    default:
      return "status=unknown";
  }
}

std::string ExecStatus::describe() const {
  switch (kind) {
    case Kind::exited: {
      std::string s = "exited with status " + std::to_string(code);
      // The shell's own codes (POSIX sh: 127 not found, 126 found but
      // not executable).
      if (code == 127) s += " (command not found)";
      if (code == 126) s += " (command not executable)";
      return s;
    }
    case Kind::signalled:
      return "was killed by signal " + signal_name(code);
    default:
      return "ended (status unknown)";
  }
}

// ---- the stderr reader --------------------------------------------------

// Shared by the ExecLink and its reader coroutine, which may outlive it
// by one cancelled read.
struct ExecLink::Stderr {
  Stderr(const asio::any_io_executor& ex, int fd, std::string i,
         const ExecLinkOptions& o)
      : pipe(ex, fd), drained(ex), id(std::move(i)), opt(o) {}

  asio::posix::stream_descriptor pipe;
  asio::steady_timer drained;  // cancelled when the reader is done
  std::string id;
  ExecLinkOptions opt;
  std::string partial;  // a line not yet ended by '\n'
  std::string last;     // the last line logged
  size_t lines = 0;
  size_t dropped = 0;
  bool done = false;

  void emit(std::string text) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.empty()) return;
    if (text.size() > opt.max_stderr_line) {
      text.resize(opt.max_stderr_line);
      text += "...";
    }
    last = text;
    if (lines++ >= opt.max_stderr_lines) {
      ++dropped;
      return;
    }
    log::line(id, "event=exec-stderr text=" + log::quote(text));
  }

  void finish() {
    if (done) return;
    done = true;
    if (!partial.empty()) emit(std::exchange(partial, {}));
    if (dropped > 0)
      log::line(id, "event=exec-stderr dropped_lines=" +
                        std::to_string(dropped));
    drained.cancel();
  }
};

asio::awaitable<void> ExecLink::read_stderr(std::shared_ptr<Stderr> s) {
  char buf[1024];
  for (;;) {
    auto [ec, n] = co_await s->pipe.async_read_some(asio::buffer(buf), kTuple);
    s->partial.append(buf, n);
    size_t nl;
    while ((nl = s->partial.find('\n')) != std::string::npos) {
      std::string text = s->partial.substr(0, nl);
      s->partial.erase(0, nl + 1);
      s->emit(std::move(text));
    }
    // A line longer than we log is cut now rather than held in memory.
    if (s->partial.size() > s->opt.max_stderr_line)
      s->emit(std::exchange(s->partial, {}));
    if (ec) break;  // end of file, or the pipe closed by finish()
  }
  s->finish();
}

// ---- ExecLink -------------------------------------------------------------

ExecLink::ExecLink(const asio::any_io_executor& ex, std::string id,
                   ExecLinkOptions opt)
    : id_(std::move(id)), opt_(std::move(opt)), socket_(ex), timer_(ex) {}

std::unique_ptr<ExecLink> ExecLink::start(const asio::any_io_executor& ex,
                                          std::string id,
                                          const std::string& command,
                                          const ExecLinkOptions& opt,
                                          std::string& error) {
  // The link and the stderr pipe, close-on-exec so that no other child
  // of ferryd inherits them.
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    error = "socketpair: " + errno_text(errno);
    return nullptr;
  }
  Fd ours{sv[0]}, theirs{sv[1]};
  int pv[2];
  if (::pipe2(pv, O_CLOEXEC) != 0) {
    error = "pipe: " + errno_text(errno);
    return nullptr;
  }
  Fd err_r{pv[0]}, err_w{pv[1]};
  if (!lift_above_stdio(theirs.fd) || !lift_above_stdio(err_w.fd)) {
    error = "fcntl: " + errno_text(errno);
    return nullptr;
  }

  // The child: socket on 0 and 1, pipe on 2, nothing else; its own
  // process group; default signal handling and an empty mask.
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_adddup2(&fa, theirs.fd, 0);
  ::posix_spawn_file_actions_adddup2(&fa, theirs.fd, 1);
  ::posix_spawn_file_actions_adddup2(&fa, err_w.fd, 2);
  ::posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  sigset_t none, defaults;
  ::sigemptyset(&none);
  ::sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGCHLD,
                  SIGUSR1, SIGUSR2, SIGALRM})
    ::sigaddset(&defaults, sig);
  ::posix_spawnattr_setflags(
      &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                 POSIX_SPAWN_SETSIGDEF);
  ::posix_spawnattr_setpgroup(&attr, 0);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);

  std::string arg0 = "sh", arg1 = "-c", arg2 = command;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, opt.shell.c_str(), &fa, &attr, argv, environ);
  ::posix_spawn_file_actions_destroy(&fa);
  ::posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    error = opt.shell + ": " + errno_text(rc);
    return nullptr;
  }

  // Ours: the socket and the read end of the pipe.
  std::unique_ptr<ExecLink> link(new ExecLink(ex, std::move(id), opt));
  link->pid_ = pid;
  boost::system::error_code ec;
  link->socket_.assign(asio::local::stream_protocol(), ours.fd, ec);
  if (!ec) ours.release();
  link->err_ = std::make_shared<Stderr>(ex, err_r.release(), link->id_, opt);
  log::line(link->id_, "event=exec-start pid=" + std::to_string(pid) +
                           " command=" + log::quote(command));
  if (ec) {
    // Cannot happen short of a broken reactor; the child is still ours
    // to reap (the destructor kills it).
    error = "socket: " + ec.message();
    return nullptr;
  }
  asio::co_spawn(ex, read_stderr(link->err_), asio::detached);
  return link;
}

ExecLink::~ExecLink() {
  if (!status_ && pid_ > 0) {
    // finish() did not run (ferryd is going down hard): no grace.
    signal_group(SIGKILL, "the link is being destroyed");
    status_ = reap_blocking(pid_);
  }
  if (err_) {
    boost::system::error_code ignored;
    err_->pipe.close(ignored);
    err_->finish();
  }
  log_exit();
}

void ExecLink::close() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

const std::string& ExecLink::last_stderr() const {
  static const std::string kNone;
  return err_ ? err_->last : kNone;
}

bool ExecLink::reap() {
  if (status_) return true;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == 0) return false;
  if (r < 0 && errno == EINTR) return false;
  ExecStatus s;
  if (r == pid_ && (WIFEXITED(st) || WIFSIGNALED(st))) {
    s = status_of(st);
  } else if (r == pid_) {
    return false;  // stopped or continued: not an end
  } else {
    // ECHILD: someone else collected it (SIGCHLD set to SIG_IGN?); it is
    // gone, but how it ended is not known.
    log::line(id_, "warning: waitpid pid=" + std::to_string(pid_) + ": " +
                       errno_text(errno));
  }
  status_ = s;
  return true;
}

void ExecLink::log_exit() {
  if (exit_logged_ || !status_) return;
  exit_logged_ = true;
  log::line(id_, "event=exec-exit " + status_->log_value());
}

void ExecLink::signal_group(int sig, const char* why) {
  // Only while the leader is unreaped: until then its pid (and so the
  // group id) cannot be reused by another process.
  if (status_ || pid_ <= 0) return;
  log::line(id_, "event=exec-kill signal=" + signal_name(sig) +
                     " reason=" + log::quote(why));
  if (::kill(-pid_, sig) != 0 && errno == ESRCH) ::kill(pid_, sig);
}

asio::awaitable<bool> ExecLink::wait_exit(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!reap()) {
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    timer_.expires_after(opt_.poll);
    co_await timer_.async_wait(kTuple);
  }
  co_return true;
}

asio::awaitable<ExecLink::Ready> ExecLink::wait_ready(
    std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (!socket_.is_open()) co_return Ready::closed;

    // Readable? Peek so the session still reads every byte.
    pollfd pfd{socket_.native_handle(), POLLIN, 0};
    if (::poll(&pfd, 1, 0) > 0) {
      char c;
      ssize_t n = ::recv(pfd.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) co_return Ready::data;
      if (n == 0) co_return Ready::eof;
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        co_return Ready::eof;
    }

    if (reap()) co_return Ready::exited;
    if (std::chrono::steady_clock::now() >= deadline) co_return Ready::timeout;
    timer_.expires_after(opt_.poll);
    co_await timer_.async_wait(kTuple);
  }
}

asio::awaitable<ExecStatus> ExecLink::finish() {
  // Hang up, then wait: the command should end on end of file.
  close();
  if (!co_await wait_exit(opt_.grace)) {
    signal_group(SIGTERM, "still running after the hang-up");
    if (!co_await wait_exit(opt_.term_grace)) {
      signal_group(SIGKILL, "still running after SIGTERM");
      // SIGKILL cannot be refused; bound the wait all the same and then
      // block in waitpid, so nothing is left unreaped.
      if (!co_await wait_exit(std::chrono::seconds(10))) {
        status_ = reap_blocking(pid_);
      }
    }
  }

  // The shell is gone; what it left running in its process group (a
  // "cmd &" it never waited for) goes too.  The group's id cannot be
  // given to a new process while any member lives, so this is safe.
  if (pid_ > 0 && ::kill(-pid_, 0) == 0) {
    log::line(id_, "event=exec-kill signal=TERM reason=" +
                       log::quote("left running in the command's group"));
    ::kill(-pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + opt_.term_grace;
    while (::kill(-pid_, 0) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      timer_.expires_after(opt_.poll);
      co_await timer_.async_wait(kTuple);
    }
    if (::kill(-pid_, 0) == 0) {
      log::line(id_, "event=exec-kill signal=KILL reason=" +
                         log::quote("left running after SIGTERM"));
      ::kill(-pid_, SIGKILL);
    }
  }

  // The last stderr lines belong before the exit line.
  if (err_ && !err_->done) {
    err_->drained.expires_after(kStderrDrain);
    co_await err_->drained.async_wait(kTuple);
    if (!err_->done) {
      boost::system::error_code ignored;
      err_->pipe.close(ignored);
      err_->finish();
    }
  }
  log_exit();
  co_return *status_;
}

}  // namespace ferry::gw
