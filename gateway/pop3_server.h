// The POP3 service: one listener (a bound acceptor, its accept loop and its
// live sessions) running on an io_context that someone else owns and runs.
// ferryd's Server (gateway/server.cc) starts one per [pop3] listen address
// next to its SMTP listeners; tests/gateway/pop3_test_server.cc runs one
// alone for the POP3 tests.
//
// How ferryd wires it in (done in server.cc; the keys are in config.h):
//
//   Config keys, a new section [pop3] (all optional; no `listen`, no POP3):
//     listen        list of addresses   default: empty (POP3 off)
//                   e.g. "127.0.0.1:110 [::1]:110"; same syntax as
//                   [listener NAME] address (parse_listen_address)
//     trusted_local boolean  default: no    USER/PASS without TLS (only
//                   for listeners that only the office LAN or loopback
//                   can reach)
//     idle_timeout  duration default: 10m   RFC 1939 autologout; never
//                   less than 10m in production
//     max_sessions  count    default: 50    per listener
//   Mailboxes come from [local] mail_root, users from [local] users_file,
//   the certificate for STLS from [tls] certificate/key (no [tls]: STLS is
//   not offered, and only a trusted_local listener can log anyone in).
//
//   In Server::start(), after the TLS context and users exist, for each
//   address A in [pop3] listen:
//     Pop3Options o;
//     o.name = "pop3";  o.address = A;  o.trusted_local = ...;
//     o.idle_timeout = ...;  o.max_sessions = ...;
//     o.mail_root = cfg.local.mail_root;
//     auto l = run_pop3_listener(io_, o, users, tls_.get(), &disk_, error);
//     if (!l) fail with "[pop3] listen A: " + error;
//     keep l in a member vector.
//   In the graceful stop (on the io thread): call stop() on each listener
//   before the io_context is allowed to run out of work; destroy them
//   after run() returns.
//
// Known limits (for the BUGS section of ferryd(8) once POP3 is wired in):
//  - Logins are USER/PASS only: no SASL AUTH (RFC 5034), no APOP, and no
//    implicit-TLS port (POP3S, 995); clients must use STLS.
//  - Failed logins close the connection after max_failed_logins, but
//    there is no delay or per-address rate limit between connections.
//  - Message files are read with blocking reads on the io thread
//    (pop3_session.cc, XXX note); login reads every file once to compute
//    the exact CRLF sizes (on the disk pool).
//  - On QUIT under TLS the connection is closed without a TLS
//    close_notify.
//  - The lock file DIR/.ferry-pop3.lock stays in each Maildir.
//
// Concurrency: run_pop3_listener() and stop() are called on the thread
// that runs `io` (or before it runs); the listener and its sessions live on
// that io_context.  `users`, `tls` and `disk` must outlive the listener and
// every session (in practice: the io_context's run()).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <string>

#include "gateway/pop3_session.h"
#include "gateway/users.h"

namespace ferry::gw {

class Pop3Listener {
 public:
  struct State;  // shared with the accept loop and the sessions
  explicit Pop3Listener(std::shared_ptr<State> state);
  // Stops the listener (as stop()) if it is still running.
  ~Pop3Listener();
  Pop3Listener(const Pop3Listener&) = delete;
  Pop3Listener& operator=(const Pop3Listener&) = delete;

  // The bound address (useful with port 0).
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  // Closes the acceptor and asks every session to end (each client hears
  // -ERR, mailboxes are released without UPDATE).  Returns at once; the
  // accept loop and the sessions finish on the io_context soon after.
  void stop();

  // Sessions currently open.
  size_t sessions() const;

 private:
  std::shared_ptr<State> state_;
};

// Binds `options.address` and starts accepting on `io`.  Sessions start
// when `io` runs.  On failure (bad address, bind error) returns nullptr
// with `error` naming the address and the cause.  `tls` null: no STLS.
// `disk` null: password checks run on the io thread (tests only; PBKDF2
// stalls every session while it runs).
std::unique_ptr<Pop3Listener> run_pop3_listener(boost::asio::io_context& io,
                                                const Pop3Options& options,
                                                const Users& users,
                                                boost::asio::ssl::context* tls,
                                                boost::asio::thread_pool* disk,
                                                std::string& error);

}  // namespace ferry::gw
