// The "exec" link: a call carried over a command's standard input and
// output (issue 6), for example ssh to the other office and a relay there
// to its ferryd's [link] listener.
//
// ExecLink::start() runs `/bin/sh -c COMMAND` with one end of an AF_UNIX
// stream socketpair as the child's stdin and stdout, and a pipe as its
// stderr; every other descriptor is closed in the child.  Our end of the
// socketpair is a local::stream_protocol::socket on the caller's
// executor, so make_link_transport(link->socket()) gives the link session
// its stream.  The child leads its own process group, so signals reach
// whatever the shell started (ssh, socat) and never ferryd.
//
// The command's stderr is read line by line and logged as
//   <id>: event=exec-stderr text="..."
// and its end, once per child, as
//   <id>: event=exec-exit status=N        (it exited)
//   <id>: event=exec-exit signal=NAME     (a signal ended it)
// where <id> is the peer name given to start().
//
// Ending: finish() hangs up (closes our socket, so the command reads end
// of file), gives the command `grace` to exit by itself, then sends
// SIGTERM to its process group, then after `term_grace` SIGKILL; it always
// reaps the child.  The destructor does the same at once (SIGKILL, then a
// blocking waitpid) if finish() did not run, so no child is left behind
// as a zombie or orphan.
//
// Reaping: the child is collected with waitpid() on its own pid, polled
// on a steady_timer (every `poll`, 20 ms by default).  No SIGCHLD handler
// is installed and no other pid is ever waited for, so other children of
// ferryd and their handlers are undisturbed.
//
// The child is started with posix_spawn() (glibc's clone/vfork path), so
// nothing runs in the child between fork and exec but glibc's own
// async-signal-safe file actions.  The signals ferryd ignores (SIGPIPE)
// are reset to their defaults and the signal mask is cleared in the child.
//
// Errors: start() returns null with `error` naming the shell and the
// cause (errno text).  A command that starts but fails is not an error
// here: its exit status is what finish() returns.
//
// Known limits:
//   - Signals go to the child's process group only while the child is
//     unreaped (afterwards its pid may be reused): a process that left
//     the group (setsid, a daemonising ssh ControlMaster) or outlived the
//     shell is not signalled; it sees end of file on the socket.
//   - ferryd uses the default grace times (5 s, 2 s); ferry.conf has no
//     key for them.
//
// Concurrency: an ExecLink belongs to the executor given to start() and
// is not thread-safe; all calls must be made on that executor.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

namespace ferry::gw {

struct ExecLinkOptions {
  std::string shell = "/bin/sh";  // run as: shell -c COMMAND
  // After the hang-up, how long the command may take to exit by itself.
  std::chrono::milliseconds grace{5000};
  // After SIGTERM to its group, how long before SIGKILL.
  std::chrono::milliseconds term_grace{2000};
  // How often waitpid() is polled while waiting for the child.
  std::chrono::milliseconds poll{20};
  // Longer stderr lines are cut (and marked "..."); after this many lines
  // the rest are counted, not logged, so a chatty command cannot flood
  // ferryd's log.
  size_t max_stderr_line = 400;
  size_t max_stderr_lines = 200;
};

// How the command ended.
struct ExecStatus {
  enum class Kind { exited, signalled, unknown } kind = Kind::unknown;
  int code = 0;  // the exit status (exited) or signal number (signalled)

  // For the log: "status=3", "signal=TERM", "status=unknown".
  std::string log_value() const;
  // For people (a call's reply): "exited with status 127 (command not
  // found)", "was killed by signal KILL".
  std::string describe() const;
};

class ExecLink {
 public:
  using Socket = boost::asio::local::stream_protocol::socket;

  // Starts `opt.shell -c command`.  `id` prefixes the log lines (the
  // peer's name).  Null with `error` set when the socketpair, the pipe or
  // the spawn fails (a missing shell: "/bin/sh: No such file or
  // directory").  A missing program *inside* the command is the shell's
  // business: it exits 127.
  static std::unique_ptr<ExecLink> start(
      const boost::asio::any_io_executor& ex, std::string id,
      const std::string& command, const ExecLinkOptions& opt,
      std::string& error);

  // Kills the process group and reaps the child if finish() has not.
  ~ExecLink();
  ExecLink(const ExecLink&) = delete;
  ExecLink& operator=(const ExecLink&) = delete;

  // Our end of the link: the command's stdin and stdout.
  Socket& socket() { return socket_; }
  pid_t pid() const { return pid_; }

  // Hangs up: closes our end of the socket (idempotent).  Pending reads
  // and writes on it fail with operation_aborted; the command reads end
  // of file.  Safe to call from a cancel hook.
  void close();

  // What the far end did first.
  enum class Ready {
    data,     // bytes wait to be read (the greeting)
    eof,      // the command closed its stdout without a word
    exited,   // the command ended (its stdout may be held by another)
    closed,   // close() was called
    timeout,  // nothing within `limit`
  };
  // Waits until the socket is readable or the command ends, without
  // reading a byte (MSG_PEEK), so the session still sees everything.
  // Polled every `poll`.
  boost::asio::awaitable<Ready> wait_ready(std::chrono::milliseconds limit);

  // Hangs up and waits for the command to end, escalating to SIGTERM and
  // SIGKILL as described above; reaps it, drains its stderr and logs the
  // exec-exit line.  Returns how it ended; a second call returns the same.
  boost::asio::awaitable<ExecStatus> finish();

  // The last line the command wrote to stderr ("" if none): the shell's
  // "not found" message makes a failed call's reply clear.
  const std::string& last_stderr() const;

 private:
  struct Stderr;
  ExecLink(const boost::asio::any_io_executor& ex, std::string id,
           ExecLinkOptions opt);
  // True once the child is reaped (status_ set); never blocks.
  bool reap();
  void log_exit();
  void signal_group(int sig, const char* why);
  boost::asio::awaitable<bool> wait_exit(std::chrono::milliseconds limit);
  static boost::asio::awaitable<void> read_stderr(std::shared_ptr<Stderr> s);

  std::string id_;
  ExecLinkOptions opt_;
  Socket socket_;
  boost::asio::steady_timer timer_;
  std::shared_ptr<Stderr> err_;
  pid_t pid_ = -1;
  std::optional<ExecStatus> status_;  // set once reaped
  bool exit_logged_ = false;
};

}  // namespace ferry::gw
