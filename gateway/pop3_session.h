// One POP3 session: the server side of RFC 1939 with CAPA and response
// codes (RFC 2449), UIDL and TOP, STLS (RFC 2595) and USER/PASS, over
// the users' Maildirs (mailbox.h).
//
// Untrusted input: every byte the client sends.  Lines and commands go
// through pop3_parser.h; user names through Users::valid_name before they
// name a directory; passwords only to Users::authenticate.  USER and PASS
// are refused (-ERR [AUTH]) unless the session runs under TLS or the
// listener is marked trusted_local, and CAPA then leaves USER out.  After
// STLS, any bytes the client pipelined behind the command are discarded
// (they were sent in the clear and could be an attacker's).
//
// States (RFC 1939): AUTHORIZATION until PASS succeeds and the mailbox
// lock is taken; TRANSACTION; UPDATE only on QUIT, when deletions are
// applied.  A dropped connection, an idle timeout (the autologout timer,
// Pop3Options::idle_timeout) or a server stop leaves the mailbox as it
// was.  A second session for a locked mailbox hears -ERR [IN-USE].
//
// Logging, one line per event with the session id as prefix:
//   P0K3...: connect client=127.0.0.1:40000 listener=pop3
//   P0K3...: tls protocol=TLSv1.3 cipher=...
//   P0K3...: login user=alice messages=3 octets=4096
//   P0K3...: login failed user=alice reason=...
//   P0K3...: disconnect user=alice retr=2 top=0 dele=1 removed=1
//            bytes=3012 status=quit
//
// Lifetime: a session is owned (shared_ptr) by the coroutine running
// run() and by its pending timer handler; it lives until the connection
// closes.  Concurrency: a session runs on the executor of its socket (one
// io_context thread); password checks and the mailbox snapshot run on the
// `disk` pool when one is given.  stop() may be called from any thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/mailbox.h"
#include "gateway/pop3_parser.h"
#include "gateway/users.h"

namespace ferry::gw {

// One POP3 listener's settings.  See pop3_server.h for the config keys
// that fill them.
struct Pop3Options {
  std::string name = "pop3";              // in log lines
  std::string address = "127.0.0.1:110";  // "host:port", "[::1]:110"
  bool trusted_local = false;             // USER/PASS allowed without TLS
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  unsigned max_sessions = 50;
  unsigned max_failed_logins = 3;  // then the connection is closed
  std::string mail_root;           // Maildirs: mail_root/USER/
};

// What every session of one listener shares.  Owned through shared_ptr
// by the listener and every session, so it outlives them all.
struct Pop3Context {
  Pop3Options options;
  const Users* users = nullptr;              // must outlive the context
  boost::asio::ssl::context* tls = nullptr;  // null: no STLS offered
  boost::asio::thread_pool* disk = nullptr;  // null: work done inline
};

// A fresh session id: "P" and 12 characters of [0-9A-Z] (time, then a
// counter), unique within the process.
std::string make_pop3_session_id();

class Pop3Session : public std::enable_shared_from_this<Pop3Session> {
 public:
  using tcp = boost::asio::ip::tcp;

  Pop3Session(std::shared_ptr<const Pop3Context> ctx, tcp::socket socket,
              std::string id);
  ~Pop3Session();
  Pop3Session(const Pop3Session&) = delete;
  Pop3Session& operator=(const Pop3Session&) = delete;

  const std::string& id() const { return id_; }

  // Runs the whole conversation; returns when the connection is closed.
  // `refuse_busy`: answer -ERR [SYS/TEMP] at once (session limit).
  boost::asio::awaitable<void> run(bool refuse_busy = false);

  // Ends the session soon: a pending read is cancelled and the client
  // hears -ERR; the mailbox is released without UPDATE.  Thread-safe.
  void stop();

 private:
  enum class State { authorization, transaction, done };

  // I/O.  Each returns false when the connection is finished (closed,
  // failed, timed out or stopped).
  boost::asio::awaitable<bool> read_more();
  boost::asio::awaitable<bool> write_all(std::string_view data);
  boost::asio::awaitable<bool> flush();
  void arm(std::chrono::milliseconds d);
  void disarm();

  // Commands.  Replies are queued in out_ and flushed before the next
  // read, so pipelined commands get their answers in one write.
  boost::asio::awaitable<bool> handle(const pop3::Command& c);
  void do_capa();
  void do_user(const pop3::Command& c);
  boost::asio::awaitable<bool> do_pass(const pop3::Command& c);
  boost::asio::awaitable<bool> do_stls();
  void do_quit();
  void do_list(const pop3::Command& c, bool uidl);
  boost::asio::awaitable<bool> do_send(const pop3::Command& c, bool top);
  void do_dele(const pop3::Command& c);
  // The message named by argument `arg` of `c`, or null after queueing
  // the -ERR reply.
  const MaildropMessage* message_arg(const pop3::Command& c, size_t arg,
                                     uint64_t& n);

  bool plain_login_allowed() const;
  void reply(const std::string& line) { out_ += line; }

  std::shared_ptr<const Pop3Context> ctx_;
  tcp::socket socket_;
  std::unique_ptr<boost::asio::ssl::stream<tcp::socket&>> tls_;
  std::string id_;
  std::string peer_;

  std::string in_;
  size_t pos_ = 0;
  std::string out_;

  boost::asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  bool timed_out_ = false;
  bool stopping_ = false;

  State state_ = State::authorization;
  std::string user_;  // from USER, lower-case
  unsigned failed_logins_ = 0;
  std::unique_ptr<Maildrop> box_;

  // For the disconnect line.
  unsigned retr_ = 0, top_ = 0, dele_ = 0;
  size_t removed_ = 0;
  uint64_t bytes_ = 0;  // message octets sent (RETR and TOP)
  std::string status_ = "dropped";
};

}  // namespace ferry::gw
