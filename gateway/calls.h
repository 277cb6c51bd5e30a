// The call manager: ferryd's half of the phone line.
//
// It owns the modems of [modem NAME], the link listeners of [link] listen
// and the scheduler state of every [peer NAME], and it runs the calls:
//
//   - Every tick (and whenever poke() says the queue changed) it asks the
//     scheduler (gateway/schedule.h: decide()) whether each dialled peer
//     is worth a call now.  The decision and its reason are kept for
//     `ferryctl why PEER`.
//   - A call goes out on the route the scheduler chose: a phone number on
//     a free modem (the peer's `line`, or any free modem for "any"),
//     tcp:HOST:PORT, or "exec": the peer's command, whose stdin and stdout
//     carry the link (gateway/exec_link.h).  After CONNECT (or the TCP
//     connect, or the command's first bytes) the link session
//     (gateway/link_session.h) exchanges the queues both ways; then the
//     modem hangs up.  The outcome goes to record_outcome(), which sets
//     the retry time by failure class; every attempt is a CallRecord in
//     the spool (`ferryctl calls`).
//   - A [modem] with direct = yes is a serial line with no modem (a
//     null-modem cable, a leased line): always up, no AT commands.  The
//     calling side sends the line FERRY-WAKE and the listening side
//     (answer = yes) starts its session on it.
//   - Each modem with answer = yes waits for RING between calls (never
//     while it dials: one loop per modem does both, one at a time) and
//     answers; the caller is identified by its TLS credentials.
//   - The control socket gets `dial PEER [wait]` (a call now, ignoring
//     windows and thresholds; with wait the client gets progress events
//     and the outcome; a dial to a peer already in a call attaches to that
//     call), `why PEER`, and the "modems" and "peers" status sections;
//     the server's `flush` calls flush().
//
// Failover (several peers for one domain, as MX records; router.h): a
// peer is failing while it is stopped, its modem line is out of service,
// or its last `failover_after` calls failed and every route of it is
// still backing off.  Then each of its queued or deferred recipients
// whose domain another peer also serves moves (spool Action::reroute) to
// the most preferred of those that is not failing, and that peer's
// thresholds decide its call.  When the backoff ends the mail moves back
// to the preferred peer, so every retry starts from the top, as an MTA
// retries MX records.  Mail moves only between calls: not away from a
// peer in a call, and never a message whose last chunk went to a ferry
// peer before the line dropped (kLinkLostReply): that peer may hold it
// whole, and only it can settle the transfer without a duplicate.  A
// message cut earlier (kLinkCutReply) or never started moves freely.  Each move is one log line,
// `<queue id>: event=reroute to=<...> from=P route=Q reason="..."`.
//
// Log lines (log.h): `<peer>: event=decide ...`, `<peer>: event=call ...`,
// `modem NAME: ...` from the driver, and the link session's own lines.
//
// Known limits (also in ferryd(8) BUGS):
//   - A stopped peer and a modem out of service are not kept across a
//     restart (sched_state.h says why); backoff, missed opportunities
//     and recent calls are, except with a sped-up clock.
//   - The link session writes to the spool synchronously on ferryd's one
//     io_context thread, so a durable write during a call briefly delays
//     the SMTP sessions (one group commit each).
//   - After a call that completed, the same peer is not called again for
//     a minute (or min_gap, if longer), so mail the peer deferred with a
//     4xx reply does not make ferryd redial at once.
//
// Concurrency: everything runs on the io_context given to the
// constructor; the public functions must be called on it, except that
// the constructor and start() run before io_context::run().
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/control.h"
#include "gateway/link_session.h"
#include "gateway/peer_tls.h"
#include "gateway/router.h"
#include "gateway/schedule.h"
#include "gateway/users.h"
#include "queue/spool.h"

namespace ferry::modem {
class Modem;
}

namespace ferry::gw {

struct CallManagerHooks {
  // A message has recipients newly failed (the bounce generator).
  std::function<void(const queue::QueueId&)> on_failed;
  // A call ended (either way); mail may have arrived or left.
  std::function<void()> after_call;
  // Records the results of mail sent (LinkContext::apply).
  std::function<std::error_code(const std::vector<queue::Transition>&,
                                std::vector<queue::TransitionResult>&)>
      apply;
  // Where the scheduler's memory is kept across restarts
  // (gateway/sched_state.h); empty: not kept.
  std::string state_file;
};

class CallManager {
 public:
  // Everything passed in must outlive the manager.  `clock` is where the
  // scheduler reads the time (SystemClock, or a ScaledClock in tests).
  CallManager(boost::asio::io_context& io, const Config& cfg,
              queue::Spool& spool, const ConfigRouter& router,
              const Users& users, const Clock& clock, CallManagerHooks hooks);
  ~CallManager();
  CallManager(const CallManager&) = delete;
  CallManager& operator=(const CallManager&) = delete;

  // Loads our link identity and the peers' credentials, binds the link
  // listeners and registers the control commands.  Modems are opened
  // (and retried) by their loops once run() starts.  False with `error`
  // naming the key, file or address and the cause.
  bool start(ControlServer& control, std::string& error);

  // Starts the modem loops, the link listeners and the scheduler tick.
  void run();

  // Ends everything: calls in progress are hung up, loops end.
  void stop();

  // The queue changed (new mail, a release): decide again soon.
  void poke();

  // `flush` (sendmail -q): every dialled peer is called as if its
  // thresholds were met, windows and backoff still applying.  Returns
  // the number of peers concerned.
  size_t flush();

  // For the notifier: the lifetime of a route's messages and the missed
  // call opportunities since `arrival`; nullopt for routes that are not
  // a peer of ours.
  struct RouteLife {
    Lifetime lifetime;
    uint32_t missed = 0;
    std::optional<SysTime> next_call;
  };
  std::optional<RouteLife> route_life(const std::string& route,
                                      SysTime arrival) const;

 private:
  struct Peer;
  struct ModemSlot;
  struct ActiveCall;

  boost::asio::awaitable<void> tick_loop();
  boost::asio::awaitable<void> modem_loop(ModemSlot& slot);
  boost::asio::awaitable<void> direct_loop(ModemSlot& slot);
  boost::asio::awaitable<void> link_accept_loop(
      boost::asio::ip::tcp::acceptor& acceptor);
  boost::asio::awaitable<void> answer_session(
      std::unique_ptr<LinkTransport> t, std::string where, uint64_t bps,
      std::shared_ptr<ActiveCall> call);
  boost::asio::awaitable<void> place_call(Peer& p, size_t route_index,
                                          ModemSlot* slot);
  void evaluate();
  // The scheduler's memory (hooks_.state_file): loaded by start(),
  // written when it changed (at most every few minutes for the window
  // bookkeeping alone).
  void load_memory();
  void save_memory(bool force);
  // Failover: is `p` failing now (and why), and the moves it implies.
  bool failing(Peer& p, SysTime now, std::string* why);
  bool failover(SysTime now, const std::vector<queue::RouteStats>& stats);
  ModemSlot* pick_modem(const Peer& p);
  LineState& line_for(Peer& p);
  void finish_call(Peer& p, const CallOutcome& out, const std::string& result,
                   const std::string& text);
  void emit(ActiveCall& call, json::Value event);
  void tell_postmaster(const std::string& peer, const std::string& text);
  void register_commands(ControlServer& control);
  json::Value modems_status() const;
  json::Value peers_status();
  void dial_command(const json::Value& args,
                    std::shared_ptr<ControlReply> reply);

  boost::asio::io_context& io_;
  const Config& cfg_;
  queue::Spool& spool_;
  const ConfigRouter& router_;
  const Users& users_;
  const Clock& clock_;
  CallManagerHooks hooks_;
  std::unique_ptr<PeerTls> tls_client_, tls_server_;
  LinkContext link_ctx_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::vector<std::unique_ptr<ModemSlot>> modems_;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors_;
  std::vector<std::weak_ptr<ActiveCall>> incoming_;  // answered calls
  LineState tcp_line_;  // the "line" of tcp routes: never down
  boost::asio::steady_timer tick_{io_};
  std::mt19937_64 rng_{std::random_device{}()};
  bool stopping_ = false;
  // Failover scans run when the queue changed, a call ended, or the set
  // of failing peers changed (not every tick: a scan reads every waiting
  // message of the peers concerned).
  bool reroute_dirty_ = true;
  std::vector<bool> failing_seen_;
  bool any_alternates_ = false;  // some domain has several peers
  std::vector<bool> backup_;      // by peer: second or later for a domain
  std::string memory_saved_;      // what the file holds, less the clock
  std::chrono::steady_clock::time_point memory_saved_at_{};
};

}  // namespace ferry::gw
