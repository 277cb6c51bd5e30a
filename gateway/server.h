// ferryd's SMTP service: the io_context, the signal set, one acceptor per
// [listener NAME], the live sessions and the small thread pool that does
// blocking disk work (Maildir fsyncs, password hashing) for them.
//
// Life cycle: construct with the loaded configuration, users, policy and
// an open spool (all must outlive the Server); start() binds every
// listener and the control socket (gateway/control.h); run() serves
// until SIGTERM/SIGINT (or stop()), then closes the listeners and the
// control socket, asks every session to end (a message being stored is
// finished first) and returns once the last session is gone.
//
// Concurrency: one io_context thread runs every session and acceptor;
// start() and run() are called from the program's main thread, stop() may
// be called from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gateway/calls.h"
#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/control.h"
#include "gateway/notify.h"
#include "gateway/policy.h"
#include "gateway/pop3_server.h"
#include "gateway/router.h"
#include "gateway/smtp_session.h"
#include "gateway/users.h"
#include "queue/spool.h"

namespace ferry::gw {

// Splits "127.0.0.1:25" / "[::1]:587" into an endpoint.  False (and
// `error`) for anything else; host names are not resolved.
bool parse_listen_address(const std::string& text,
                          boost::asio::ip::tcp::endpoint& out,
                          std::string& error);

class Server {
 public:
  Server(const Config& cfg, const Users& users, const Policy& policy,
         queue::Spool& spool);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Calls: the router and the scheduler's clock for the call manager
  // (gateway/calls.h).  Call before start(); without it ferryd places
  // and answers no calls.  Both must outlive the Server.
  void enable_calls(const ConfigRouter& router, const Clock& clock,
                    CallManagerHooks hooks);

  // Notifications (gateway/notify.h): failed and delivered recipients are
  // recorded through `n` (link sessions and pickup), and its sweep runs
  // every `every` (delay warnings, lifetimes).  Call before start().
  void enable_notify(Notifier& n, std::chrono::milliseconds every);

  // Asks for a pickup run (thread-safe).
  void want_pickup();

  // Runs `fn` on the server's io_context (thread-safe).
  void post(std::function<void()> fn);

  // The call manager, once start() succeeded with calls enabled.
  CallManager* calls() { return calls_.get(); }

  // Loads the TLS certificate (if [tls] names one) and binds every
  // listener.  On failure returns false with `error` naming the listener
  // or file and the cause; nothing is left bound.
  bool start(std::string& error);

  // Serves until stopped; returns 0 after a graceful stop.
  int run();

  // Graceful stop (thread-safe).
  void stop();

  // The control socket (bound by start()).  Components register their
  // commands and status sections here between start() and run().
  ControlServer& control() { return *control_; }

 private:
  struct Listener {
    const ListenerConfig* cfg;
    boost::asio::ip::tcp::acceptor acceptor;
  };
  boost::asio::awaitable<void> accept_loop(Listener& l);
  void do_stop();
  // Mail left in the spool by ferry-sendmail (gateway/pickup.h): one run at
  // a time on the disk pool; a request during a run queues one more run.
  void run_pickup();
  void arm_pickup_timer();
  void arm_sweep_timer();

  const Config& cfg_;
  boost::asio::io_context io_{1};
  boost::asio::signal_set signals_{io_};
  boost::asio::thread_pool disk_{2};
  std::unique_ptr<boost::asio::ssl::context> tls_;
  SmtpContext ctx_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<ControlServer> control_;  // issue 8: ferryctl's socket
  std::vector<std::unique_ptr<Pop3Listener>> pop3_;  // [pop3] listen
  const ConfigRouter* router_ = nullptr;
  const Clock* clock_ = nullptr;
  CallManagerHooks hooks_;
  std::unique_ptr<CallManager> calls_;
  Notifier* notifier_ = nullptr;
  std::chrono::milliseconds sweep_every_{60000};
  boost::asio::steady_timer sweep_timer_{io_};
  boost::asio::steady_timer pickup_timer_{io_};
  bool pickup_running_ = false;
  bool pickup_again_ = false;
  std::set<std::weak_ptr<SmtpSession>,
           std::owner_less<std::weak_ptr<SmtpSession>>>
      sessions_;
  bool stopping_ = false;
};

}  // namespace ferry::gw
