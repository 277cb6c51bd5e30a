// One inbound SMTP session: the server side of RFC 5321 with the ESMTP
// extensions ferryd offers (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN,
// ENHANCEDSTATUSCODES, CHUNKING, STARTTLS, AUTH PLAIN/LOGIN).
//
// Untrusted input: everything the client sends.  Commands and bodies go
// through smtp_parser.h; addresses through address.h; every decision about
// senders and recipients through policy.h.  What leaves a session is a
// complete message handed to the spool (remote recipients) and to Maildirs
// (local recipients); the client hears 250 only after both are durable.
//
// Lifetime: a session is owned by the coroutine that runs it (shared_ptr
// held by run() and its watchdog) and lives until the connection closes.
// Concurrency: a session runs on one io_context thread (the executor of
// its socket); blocking work (fsync, password hashing) is posted to the
// disk pool and the result posted back.  stop() must be called on the
// session's executor.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/address.h"
#include "gateway/config.h"
#include "gateway/policy.h"
#include "gateway/smtp_parser.h"
#include "gateway/users.h"
#include "queue/spool.h"

namespace ferry::gw {

// What every session shares; owned by the Server and outliving all
// sessions.
struct SmtpContext {
  const Config* cfg = nullptr;
  const Users* users = nullptr;
  const Policy* policy = nullptr;
  queue::Spool* spool = nullptr;
  boost::asio::ssl::context* tls = nullptr;  // null: no [tls] configured
  boost::asio::thread_pool* disk = nullptr;  // fsync and hashing work
  std::string hostname;
};

// A fresh identifier in the spool's shape (16 of [0-9A-Z], time then a
// counter).  Used for session ids ("S" prefix, shortened) and as the id in
// the Received: header and Maildir names.
std::string make_message_id();

class SmtpSession : public std::enable_shared_from_this<SmtpSession> {
 public:
  using tcp = boost::asio::ip::tcp;
  using Clock = std::chrono::steady_clock;

  SmtpSession(SmtpContext& ctx, const ListenerConfig& listener,
              tcp::socket socket, std::string id);
  ~SmtpSession();

  const std::string& id() const { return id_; }

  // Runs the whole conversation; returns when the connection is closed.
  // `refuse_busy` answers 421 at once (session limit reached).
  boost::asio::awaitable<void> run(bool refuse_busy = false);

  // Asks the session to end: pending reads are cancelled and the client
  // hears 421 4.3.2; a message being stored is finished first.
  void stop();

 private:
  // Per-transaction state (MAIL .. end of DATA/BDAT LAST, or RSET).
  struct Transaction {
    bool active = false;
    PathParse from;
    std::string sender;  // envelope sender as stored ("" = null path)
    uint64_t declared_size = 0;
    bool smtputf8 = false;
    std::string envid;
    queue::Ret ret = queue::Ret::unspecified;
    std::vector<std::string> local_users;  // unique, in order
    std::vector<queue::NewRecipient> remote;
    unsigned accepted = 0;
    std::string first_rcpt;  // for "for <...>" when only one
    // BDAT in progress.
    bool bdat = false;
    bool bdat_refused = false;  // a chunk arrived without a transaction
    std::string msg_id;
    std::string body;
    std::unique_ptr<smtp::BodyReader> reader;
    size_t header_at = 0;  // where the client's bytes start in `body`
  };

  // I/O.
  boost::asio::awaitable<bool> fill(std::chrono::seconds timeout);
  boost::asio::awaitable<bool> flush();
  boost::asio::awaitable<void> watchdog();
  void set_deadline(Clock::duration d);
  void clear_deadline();
  std::string_view pending() const {
    return std::string_view(in_).substr(pos_);
  }
  void consume(size_t n);

  // Replies are queued and flushed when we need to read (RFC 2920).
  void reply(int code, std::string_view enhanced, std::string_view text);
  void reply(const Reply& r) { reply(r.code, r.enhanced, r.text); }

  // Commands.
  boost::asio::awaitable<bool> greet();
  boost::asio::awaitable<bool> handle(const smtp::ParsedCommand& pc);
  void do_helo(const smtp::Command& c, bool esmtp);
  void do_mail(const smtp::ParsedCommand& pc);
  void do_rcpt(const smtp::ParsedCommand& pc);
  void do_vrfy(const smtp::Command& c);
  boost::asio::awaitable<bool> do_data(const smtp::Command& c);
  boost::asio::awaitable<bool> do_bdat(const smtp::Command& c);
  boost::asio::awaitable<bool> do_starttls(const smtp::Command& c);
  boost::asio::awaitable<bool> do_auth(const smtp::Command& c);
  boost::asio::awaitable<bool> read_auth_line(std::string& out);

  // Message assembly and delivery.
  void begin_message();
  void finish_headers();
  void refuse_faults(const smtp::BodyFaults& f, std::string_view cmd);
  boost::asio::awaitable<void> deliver();
  std::string received_header() const;
  ClientFacts facts() const;
  bool auth_allowed() const;
  void reset_transaction();

  SmtpContext& ctx_;
  const ListenerConfig& listener_;
  tcp::socket socket_;
  std::unique_ptr<boost::asio::ssl::stream<tcp::socket&>> tls_;
  std::string id_;
  std::string peer_ip_;
  unsigned short peer_port_ = 0;

  std::string in_;
  size_t pos_ = 0;
  std::string out_;

  boost::asio::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool timed_out_ = false;
  bool alive_ = true;
  bool stopping_ = false;
  bool closing_ = false;  // QUIT or a fatal reply: stop reading

  std::string helo_;
  bool esmtp_ = false;
  bool authenticated_ = false;
  std::string auth_user_;
  unsigned auth_failures_ = 0;
  unsigned errors_ = 0;
  unsigned commands_ = 0;
  unsigned messages_ = 0;
  std::string current_cmd_ = "CONNECT";
  Transaction tx_;
};

}  // namespace ferry::gw
