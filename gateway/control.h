// ferryd's control socket: how ferryctl (and scripts) ask the running
// daemon about its queue, its calls and its modems, and tell it to hold,
// release, delete or retry mail and to dial a peer.
//
// Transport: a Unix stream socket (default /run/ferry/ctl.sock).  The
// client writes one request per line and reads one reply per line:
//
//   -> {"cmd":"queue.list","args":{"route":"branch","older_than":7200}}
//   <- {"ok":true,"result":{...}}
//   <- {"ok":false,"error":{"code":"not_found","message":"..."}}
//
// A long command (dial --wait) first sends any number of progress lines,
// then its one final reply:
//
//   <- {"progress":{"peer":"branch","phase":"sending","bytes_out":12000,
//       "bytes_in":0,"messages_done":2,"messages_total":5,"rate":1450,
//       "eta":17,"text":"..."}}
//
// Progress members are all optional except "phase"; phases are
// "dialling", "connected", "login", "sending", "receiving", "hangup".
// "rate" is payload bytes per second, "eta" seconds left (both only when
// known).  The call manager only has to emit these; ferryctl renders them.
// dial's final result is {"outcome":"ok"|"busy"|"no_answer"|"line_down"|
// "auth_failed"|"partial","text":"one line for a person"}; ferryctl maps
// the outcome to its exit status.
//
// Status sections a provider replaces: "modems" is an array of
// {"name","state" (idle|dialling|connected|...),"speed" (bps, when
// connected),"peer"}; "peers" an array of {"name","messages",
// "recipients","bytes","oldest_age","next_call" (epoch seconds or null),
// "next_call_reason","last_call":{"start","result"}}.
//
// A line that is not JSON but a bare word ("flush") is taken as that
// command without arguments, for ferry-sendmail -q and shell scripts.
//
// Error codes (error.code) and what ferryctl makes of them are listed in
// man/ferryctl.1: bad_request, unknown_command, not_found, bad_state,
// permission, not_available, failed, and for calls busy, no_answer,
// line_down, auth_failed, partial.
//
// Security: the socket is created with the configured mode (0660) and
// group; start() refuses a directory that anybody may write to and a
// path that belongs to another user.  Each connection's peer credentials
// (SO_PEERCRED) are checked: root, ferryd's own uid and members of the
// configured group (primary or supplementary) are served; anyone else
// gets one "permission" reply and is disconnected.
//
// Extending: components register commands (add_command) and status
// sections (add_status_provider) before run(); the built-in status shows
// "no modems configured" and the spool's routes as peers until the call
// manager and the scheduler register their own.
//
// Concurrency: everything runs on the io_context passed in (one thread).
// Handlers run on it too and must not block for long; a reply object may
// be kept and completed later from that same io_context.
#pragma once

#include <sys/types.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/json.h"
#include "queue/spool.h"

namespace ferry::gw {

struct ControlOptions {
  std::string path;    // the socket's file name
  mode_t mode = 0660;  // permission bits set on the socket
  // Group that may use the socket; nullopt: ferryd's own group (or, for
  // an inherited socket, the socket file's group).
  std::optional<gid_t> group;
  // A listening socket already bound to `path` (systemd socket
  // activation, gateway/sd_listen.h): adopted as it is -- no bind, no
  // chmod, and the file is left in place on stop.  -1: bind it ourselves.
  int inherited_fd = -1;
};

class ControlConnection;

// One request's answer.  Handlers either answer at once (done/fail) or
// keep the shared_ptr and answer later; a reply dropped unanswered sends
// a "failed" error so the client never hangs.  Use on the io_context only.
class ControlReply {
 public:
  ControlReply(std::shared_ptr<ControlConnection> conn, std::string cmd);
  ~ControlReply();
  ControlReply(const ControlReply&) = delete;
  ControlReply& operator=(const ControlReply&) = delete;

  // One {"progress":event} line.  Ignored after done/fail.
  void progress(json::Value event);
  // The final {"ok":true,"result":result} line.
  void done(json::Value result);
  // The final {"ok":false,"error":{"code":code,"message":message}} line.
  void fail(std::string_view code, std::string_view message);

  bool finished() const { return finished_; }
  // False once the client has gone away (a long job may give up).
  bool client_connected() const;
  const std::string& command() const { return cmd_; }

 private:
  std::shared_ptr<ControlConnection> conn_;
  std::string cmd_;
  bool finished_ = false;
};

class ControlServer {
 public:
  // `args` is the request's "args" object (null when absent).
  using Handler = std::function<void(const json::Value& args,
                                     std::shared_ptr<ControlReply> reply)>;
  // Returns one section of `status` (e.g. "modems": an array).
  using StatusProvider = std::function<json::Value()>;

  // The spool and the io_context must outlive the server.
  ControlServer(boost::asio::io_context& io, queue::Spool& spool,
                ControlOptions opts);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Registers (or replaces) a command; `help` is one line for "help".
  void add_command(std::string name, Handler handler, std::string help);
  // Replaces the built-in status section `name` ("modems", "peers") or
  // adds a new one.
  void add_status_provider(std::string name, StatusProvider provider);

  // The cost of a call for `calls` (a tariff); nullopt: unknown.
  using CostFn = std::function<std::optional<double>(const queue::CallRecord&)>;
  void set_call_cost(CostFn fn) { cost_ = std::move(fn); }

  // Checks the directory and any existing file at the path, binds,
  // sets owner, group and mode, and starts accepting.  On failure returns
  // false with `error` naming the path and the cause; nothing is left
  // behind.  A stale socket of our own uid that nobody answers on is
  // replaced; a live one means another ferryd: refused.
  bool start(std::string& error);

  // Closes the acceptor and every connection and removes the socket file
  // (if it is still ours).  Idempotent; call on the io_context.
  void stop();

  const ControlOptions& options() const { return opts_; }

  // Used by connections.
  void dispatch(const std::string& line,
                std::shared_ptr<ControlConnection> conn);
  bool peer_allowed(uid_t uid, gid_t gid,
                    const std::vector<gid_t>& groups) const;
  void forget(ControlConnection* c);

 private:
  struct Command {
    Handler handler;
    std::string help;
  };
  boost::asio::awaitable<void> accept_loop();
  void add_builtin_commands();
  json::Value status();

  boost::asio::io_context& io_;
  queue::Spool& spool_;
  ControlOptions opts_;
  gid_t group_ = 0;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::map<std::string, Command> commands_;
  std::map<std::string, StatusProvider> status_;
  CostFn cost_;
  std::map<ControlConnection*, std::weak_ptr<ControlConnection>> conns_;
  std::chrono::steady_clock::time_point started_;
  ino_t inode_ = 0;  // of the socket we created, for a safe unlink
  bool running_ = false;
  uint64_t next_conn_ = 0;
};

// ---- Pieces shared with ferryctl (no I/O) ----------------------------

// Queue filter as sent in "args": route, sender, recipient (an address,
// or "@domain" for a whole domain, case-insensitive) and older_than
// (seconds).  Empty members match everything.
struct QueueFilter {
  std::string route, sender, recipient;
  int64_t older_than = 0;
  static QueueFilter from_json(const json::Value& args);
  bool empty() const;
  bool matches(const queue::MessageInfo& m, queue::Clock::time_point now) const;
};

// A message as the control protocol shows it.
json::Value message_json(const queue::MessageInfo& m,
                         queue::Clock::time_point now);

// Line efficiency of a call: payload bytes / (line rate / 10 * seconds),
// as a fraction; nullopt when the rate or the duration is unknown.
std::optional<double> line_efficiency(uint64_t payload_bytes, uint64_t line_bps,
                                      double seconds);

}  // namespace ferry::gw
