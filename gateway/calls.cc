// The call manager (see calls.h).

#include "gateway/calls.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>

#include "gateway/address.h"
#include "gateway/exec_link.h"
#include "gateway/files.h"
#include "gateway/log.h"
#include "gateway/pop3_fetch.h"
#include "gateway/sched_state.h"
#include "gateway/smtp_client.h"
#include "gateway/server.h"
#include "modem/error.h"
#include "modem/modem.h"
#include "modem/port.h"

namespace ferry::gw {

namespace asio = boost::asio;
using asio::ip::tcp;
using json::Value;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::chrono::seconds kTick{1};
// How long a modem listens for RING before it looks for a dial request.
constexpr std::chrono::milliseconds kListenSlice{2000};
// A modem that cannot be opened is tried again after this long.
constexpr std::chrono::seconds kReopen{30};
// After a completed call the peer is left alone this long (calls.h).
constexpr std::chrono::seconds kSettle{60};

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) == 0 && buf[0] != '\0') return buf;
  return "ferry";
}

// On a direct line the caller sends this before the answerer's greeting
// (there is no RING): the answerer, listening, starts its session on it.
constexpr std::string_view kWakeLine = "FERRY-WAKE\r\n";

bool is_tcp_route(std::string_view r) { return r.rfind("tcp:", 0) == 0; }
// Routes that go out without a modem line.
bool needs_modem(std::string_view r) { return !is_tcp_route(r) && r != "exec"; }

// The route exec: how long its command may take to bring the far end's
// greeting (ssh logging in), as the TCP connect is given.
constexpr std::chrono::seconds kExecAnswerLimit{60};

// Why an exec route's command gave no link: the call's reply, for
// `ferryctl dial --wait` and `ferryctl why`.
std::string exec_no_link_reply(ExecLink::Ready r, const ExecStatus& st,
                               const std::string& last_stderr) {
  std::string s;
  switch (r) {
    case ExecLink::Ready::closed:
      return "call cancelled before the greeting; the command " +
             st.describe();
    case ExecLink::Ready::timeout:
      s = "no greeting through the command in " +
          std::to_string(kExecAnswerLimit.count()) + "s; it " + st.describe();
      break;
    default:
      s = "the command " + st.describe() + " before the greeting";
      break;
  }
  if (!last_stderr.empty()) s += ": " + last_stderr;
  return s;
}

// The domain of an envelope address, lower-case; empty when it has none.
std::string domain_of(std::string_view address) {
  size_t at = address.rfind('@');
  if (at == std::string_view::npos) return {};
  return lower_ascii(address.substr(at + 1));
}

int64_t epoch(SysTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(
             t.time_since_epoch())
      .count();
}

// The outcome word ferryctl maps to its exit status (control.h).
std::string outcome_word(const std::optional<FailureClass>& f,
                         uint32_t moved) {
  if (!f) return "ok";
  switch (*f) {
    case FailureClass::busy:
      return "busy";
    case FailureClass::no_answer:
    case FailureClass::no_carrier:
      return "no_answer";
    case FailureClass::no_dialtone:
      return "line_down";
    case FailureClass::auth_failed:
      return "auth_failed";
    case FailureClass::dropped:
    case FailureClass::protocol_error:
      return moved > 0 ? "partial" : "failed";
    default:
      return "failed";
  }
}

}  // namespace

struct CallManager::ActiveCall {
  std::string peer;  // empty until an answered caller is known
  json::Value last;  // the last progress event
  std::vector<std::shared_ptr<ControlReply>> watchers;
  std::function<void()> cancel;  // hang up / close now
  uint64_t speed = 0;
};

struct CallManager::Peer {
  const PeerConfig* cfg = nullptr;
  PeerSchedule sched;
  PeerState st;
  Decision last;
  bool decided = false;
  bool manual = false;  // `ferryctl dial`: call now
  bool flush = false;   // `flush`: thresholds met
  // The last call failed: its retry is due after the backoff whatever
  // the thresholds say (they were met when that call was decided).
  bool retry = false;
  std::vector<std::shared_ptr<ControlReply>> waiting;  // dial requests
  std::shared_ptr<ActiveCall> call;
  std::optional<SysTime> settle_until;
};

struct CallManager::ModemSlot {
  explicit ModemSlot(asio::io_context& io) : wake(io) {}
  const ModemConfig* cfg = nullptr;
  std::unique_ptr<modem::Modem> m;
  std::unique_ptr<modem::SerialPort> port;  // direct lines: no modem
  std::string wake_buf;  // direct lines: bytes before the wake line
  LineState line;
  std::string state = "closed";
  uint64_t speed = 0;
  std::string peer;
  Peer* dial_peer = nullptr;  // a call the scheduler asked for
  size_t dial_route = 0;
  asio::steady_timer wake;
};

CallManager::CallManager(asio::io_context& io, const Config& cfg,
                         queue::Spool& spool, const ConfigRouter& router,
                         const Users& users, const Clock& clock,
                         CallManagerHooks hooks)
    : io_(io),
      cfg_(cfg),
      spool_(spool),
      router_(router),
      users_(users),
      clock_(clock),
      hooks_(std::move(hooks)) {
  tcp_line_.name = "tcp";
  for (const PeerConfig& pc : cfg_.peers) {
    auto p = std::make_unique<Peer>();
    p->cfg = &pc;
    p->sched = pc.schedule;
    p->sched.name = pc.name;
    p->st.routes.resize(p->sched.routes.size());
    peers_.push_back(std::move(p));
  }
  // Is any domain served by several peers?  (An entry ".sub.example" is
  // tried as a name under it.)
  // Which peers stand behind another for some domain (mail may sit there
  // only while a better one fails, so only their queues can move back).
  backup_.assign(peers_.size(), false);
  for (const PeerConfig& pc : cfg_.peers) {
    for (const std::string& d : pc.domains) {
      std::string name = d.starts_with('.') ? "x" + d : d;
      std::vector<std::string> routes = router_.routes_for(name);
      if (routes.size() > 1) any_alternates_ = true;
      for (size_t r = 1; r < routes.size(); ++r) {
        for (size_t k = 0; k < peers_.size(); ++k) {
          if (peers_[k]->cfg->name == routes[r]) backup_[k] = true;
        }
      }
    }
  }
  failing_seen_.assign(peers_.size(), false);
  for (const ModemConfig& mc : cfg_.modems) {
    auto s = std::make_unique<ModemSlot>(io_);
    s->cfg = &mc;
    s->line.name = mc.name;
    modems_.push_back(std::move(s));
  }
}

CallManager::~CallManager() = default;

bool CallManager::start(ControlServer& control, std::string& error) {
  // Our identity and the peers' pins (gateway/peer_tls.h).
  bool need_tls = false;
  std::vector<PinnedPeer> pins;
  for (const PeerConfig& pc : cfg_.peers) {
    if (pc.protocol != PeerConfig::Protocol::ferry) continue;
    need_tls = true;
    PinnedPeer pin{pc.name, normalize_fingerprint(pc.fingerprint)};
    if (!pc.psk_file.empty() &&
        !load_psk_file(pc.psk_file, pin.psk, error)) {
      error = "[peer " + pc.name + "] psk_file: " + error;
      return false;
    }
    if (!pin.fingerprint.empty() || !pin.psk.empty()) pins.push_back(pin);
  }
  if (need_tls || !cfg_.link.listen.empty()) {
    // Our certificate; none is needed when every peer uses a PSK.
    PeerIdentity me;
    if (!cfg_.link.certificate.empty() &&
        (!read_text_file(cfg_.link.certificate, me.cert_pem, error) ||
         !read_text_file(cfg_.link.key, me.key_pem, error))) {
      error = "[link] " + error;
      return false;
    }
    tls_client_ = PeerTls::make(me, pins, false, error);
    if (tls_client_) tls_server_ = PeerTls::make(me, pins, true, error);
    if (!tls_client_ || !tls_server_) {
      error = "[link] certificate " + cfg_.link.certificate + ": " + error;
      return false;
    }
  }
  link_ctx_.spool = &spool_;
  link_ctx_.router = &router_;
  link_ctx_.users = &users_;
  link_ctx_.mail_root = cfg_.local.mail_root;
  link_ctx_.tls_client = tls_client_.get();
  link_ctx_.tls_server = tls_server_.get();
  link_ctx_.options.hostname =
      cfg_.hostname.empty() ? host_name() : cfg_.hostname;
  link_ctx_.options.chunk_size = cfg_.link.chunk_size;
  link_ctx_.options.window_chunks = cfg_.link.window_chunks;
  link_ctx_.options.timeout = cfg_.link.timeout;
  link_ctx_.options.max_message_size = cfg_.smtp.max_message_size;
  link_ctx_.options.atrn_domains = cfg_.local.domains;
  link_ctx_.on_failed = hooks_.on_failed;
  link_ctx_.apply = hooks_.apply;

  // Link listeners.
  for (const std::string& address : cfg_.link.listen) {
    tcp::endpoint ep;
    std::string why;
    if (!parse_listen_address(address, ep, why)) {
      error = "[link] listen " + address + ": " + why;
      acceptors_.clear();
      return false;
    }
    auto a = std::make_unique<tcp::acceptor>(io_);
    boost::system::error_code ec;
    a->open(ep.protocol(), ec);
    if (!ec) a->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) a->bind(ep, ec);
    if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      error = "[link] listen " + address + ": " + ec.message();
      acceptors_.clear();
      return false;
    }
    log::line("ferryd", "listening link address=" + log::quote(address) +
                            " port=" +
                            std::to_string(a->local_endpoint().port()));
    acceptors_.push_back(std::move(a));
  }
  register_commands(control);
  load_memory();
  return true;
}

void CallManager::load_memory() {
  if (hooks_.state_file.empty()) return;
  SchedulerMemory m;
  std::string error;
  if (!load_scheduler_memory(hooks_.state_file, m, error)) {
    log::line("ferryd", "scheduler state not loaded error=" +
                            log::quote(error) + " (starting afresh)");
    return;
  }
  size_t n = 0;
  for (auto& p : peers_) {
    auto it = m.peers.find(p->cfg->name);
    if (it == m.peers.end()) continue;
    p->st = std::move(it->second);
    // The routes may have changed since: alternates keep their index.
    p->st.routes.resize(p->sched.routes.size());
    ++n;
  }
  for (auto& s : modems_) {
    auto it = m.lines.find(s->cfg->name);
    if (it == m.lines.end()) continue;
    s->line = std::move(it->second);
    s->line.name = s->cfg->name;
  }
  if (n > 0)
    log::line("ferryd", "scheduler state loaded peers=" + std::to_string(n) +
                            " file=" + log::quote(hooks_.state_file));
}

void CallManager::save_memory(bool force) {
  if (hooks_.state_file.empty()) return;
  SchedulerMemory m;
  for (const auto& p : peers_) m.peers[p->cfg->name] = p->st;
  for (const auto& s : modems_) m.lines[s->cfg->name] = s->line;
  // What changed, leaving out how far the window bookkeeping has got
  // (it moves every tick): that alone is written every few minutes.
  SchedulerMemory sig = m;
  for (auto& [name, st] : sig.peers) st.windows_checked.reset();
  std::string key = json::write(to_json(sig));
  auto now = std::chrono::steady_clock::now();
  if (!force && key == memory_saved_ &&
      now - memory_saved_at_ < std::chrono::minutes(10))
    return;
  std::string error;
  if (!save_scheduler_memory(hooks_.state_file, json::write(to_json(m)),
                             error)) {
    log::line("ferryd", "scheduler state not saved error=" +
                            log::quote(error));
    return;
  }
  memory_saved_ = std::move(key);
  memory_saved_at_ = now;
}

void CallManager::run() {
  for (auto& s : modems_) asio::co_spawn(io_, modem_loop(*s), asio::detached);
  for (auto& a : acceptors_)
    asio::co_spawn(io_, link_accept_loop(*a), asio::detached);
  asio::co_spawn(io_, tick_loop(), asio::detached);
}

void CallManager::stop() {
  if (stopping_) return;
  save_memory(true);
  stopping_ = true;
  tick_.cancel();
  boost::system::error_code ec;
  for (auto& a : acceptors_) a->close(ec);
  for (auto& s : modems_) s->wake.cancel();
  for (auto& w : incoming_) {
    if (auto c = w.lock(); c && c->cancel) c->cancel();
  }
  for (auto& p : peers_) {
    if (p->call && p->call->cancel) p->call->cancel();
    for (auto& w : p->waiting)
      w->fail("failed", "ferryd is stopping; no call was placed");
    p->waiting.clear();
  }
}

void CallManager::poke() {
  if (stopping_) return;
  reroute_dirty_ = true;
  tick_.cancel();  // the loop evaluates at once
}

// ---- the scheduler tick ------------------------------------------------

asio::awaitable<void> CallManager::tick_loop() {
  while (!stopping_) {
    evaluate();
    tick_.expires_after(kTick);
    co_await tick_.async_wait(kTuple);
  }
}

LineState& CallManager::line_for(Peer& p) {
  for (const std::string& r : p.sched.routes) {
    if (!needs_modem(r)) continue;
    if (ModemSlot* s = pick_modem(p)) return s->line;
    for (auto& s : modems_) {
      if (p.sched.line == "any" || s->cfg->name == p.sched.line)
        return s->line;
    }
  }
  return tcp_line_;
}

CallManager::ModemSlot* CallManager::pick_modem(const Peer& p) {
  for (auto& s : modems_) {
    if (!s->cfg->dial) continue;
    if (p.sched.line != "any" && s->cfg->name != p.sched.line) continue;
    if ((s->m || s->port) && s->state == "idle" && s->dial_peer == nullptr &&
        !s->line.out_of_service)
      return s.get();
  }
  return nullptr;
}

void CallManager::evaluate() {
  if (stopping_) return;
  SysTime now = clock_.now();
  std::vector<queue::RouteStats> stats;
  if (auto ec = spool_.route_stats(stats)) {
    log::line("ferryd", "scheduler error=" + log::quote(ec.message()));
    return;
  }
  if (any_alternates_ && failover(now, stats)) {
    stats.clear();
    if (auto ec = spool_.route_stats(stats)) {
      log::line("ferryd", "scheduler error=" + log::quote(ec.message()));
      return;
    }
  }
  for (auto& pp : peers_) {
    Peer& p = *pp;
    note_time(p.sched, p.st, now);
    if (p.call) continue;  // in a call now
    QueueSummary q;
    for (const auto& s : stats) {
      if (s.route == p.cfg->name) q = summarize(s);
    }
    if (!p.cfg->dial) {
      p.last = Decision{};
      p.last.reason = "hold for pickup: mail waits until " + p.cfg->name +
                      " calls us";
      p.decided = true;
      continue;
    }
    if (p.sched.routes.empty()) {
      p.last = Decision{};
      p.last.reason = "no routes configured";
      p.decided = true;
      continue;
    }
    LineState& line = line_for(p);
    PeerSchedule sched = p.sched;
    if (p.manual || p.flush) {
      // Call now: thresholds, windows and the settling pause do not
      // apply; backoff and a stopped peer still do for a flush.
      sched.triggers.min_messages = p.manual ? 0 : 1;
      sched.triggers.min_bytes = 0;
      sched.windows = CallWindows();
    } else if (p.retry && q.messages > 0) {
      // A retry: any queued message is enough; windows still apply.
      sched.triggers.min_messages = 1;
      sched.triggers.min_bytes = 0;
    }
    Decision d;
    if (p.manual) {
      d.call = true;
      d.reason = "asked for by ferryctl dial";
      for (size_t i = 0; i < sched.routes.size(); ++i) {
        if (p.st.routes[i].not_before <= now) {
          d.route_index = i;
          break;
        }
      }
      d.route = sched.routes[d.route_index];
      d.hang_up_by = now + sched.limits.max_call;
    } else {
      d = decide(sched, p.st, line, q, now);
      if (p.flush && !d.call && q.messages == 0) p.flush = false;
      // Say what really decided: the retry, not a threshold it lowered.
      if (d.call && p.retry && !p.flush && q.messages > 0)
        d.reason = "retry after the failed call; " +
                   std::to_string(q.messages) + " message" +
                   (q.messages == 1 ? "" : "s") + " waiting";
    }
    if (!d.call && any_alternates_ && failing(p, now, nullptr)) {
      d.reason += "; meanwhile its mail for domains other peers also "
                  "serve goes to them";
    }
    if (d.call && !p.manual && !p.flush && p.settle_until &&
        now < *p.settle_until) {
      d.call = false;
      d.next = *p.settle_until;
      d.reason = "settling after the last call";
    }
    bool changed = !p.decided || d.call != p.last.call ||
                   d.reason != p.last.reason;
    const std::string before = p.last.reason;
    p.last = d;
    p.decided = true;
    if (!d.call) {
      if (changed)
        log::line(p.cfg->name,
                  "event=decide call=no reason=" + log::quote(d.reason));
      continue;
    }
    // A call: find the way out.
    const std::string& route = d.route;
    ModemSlot* slot = nullptr;
    if (needs_modem(route)) {
      slot = pick_modem(p);
      if (slot == nullptr) {
        p.last.call = false;
        p.last.reason = "waiting for a free modem (" + d.reason + ")";
        // Logged once, not on every tick of the wait.
        if (p.last.reason != before)
          log::line(p.cfg->name, "event=decide call=wait reason=" +
                                     log::quote("no free modem"));
        continue;
      }
    }
    log::line(p.cfg->name, "event=decide call=yes route=" +
                               log::quote(route) +
                               " reason=" + log::quote(d.reason));
    p.manual = false;
    p.flush = false;
    p.call = std::make_shared<ActiveCall>();
    p.call->peer = p.cfg->name;
    for (auto& w : p.waiting) p.call->watchers.push_back(w);
    p.waiting.clear();
    if (slot != nullptr) {
      slot->dial_peer = &p;
      slot->dial_route = d.route_index;
      slot->state = "dialling";
      slot->peer = p.cfg->name;
      slot->wake.cancel();
    } else {
      asio::co_spawn(io_, place_call(p, d.route_index, nullptr),
                     asio::detached);
    }
  }
  save_memory(false);
}

// ---- failover -----------------------------------------------------------

bool CallManager::failing(Peer& p, SysTime now, std::string* why) {
  if (!p.cfg->dial) return false;  // held for pickup: nothing to judge
  if (p.st.stopped) {
    if (why) *why = p.cfg->name + " stopped: " + p.st.stopped_reason;
    return true;
  }
  bool modem_only = true;
  for (const std::string& r : p.sched.routes) {
    if (!needs_modem(r)) modem_only = false;
  }
  LineState& line = line_for(p);
  if (modem_only && line.out_of_service) {
    if (why) *why = "modem " + line.name + " out of service";
    return true;
  }
  if (p.st.failures < p.cfg->failover_after) return false;
  // Backing off: no route of the peer may be tried before `ready`.
  SysTime ready = SysTime::max();
  for (const RouteState& rs : p.st.routes) ready = std::min(ready, rs.not_before);
  if (p.st.routes.empty()) ready = SysTime{};
  ready = std::max(ready, p.st.not_before);
  if (modem_only) ready = std::max(ready, line.not_before);
  if (ready <= now) return false;
  if (why) {
    *why = std::to_string(p.st.failures) + " failed call" +
           (p.st.failures == 1 ? "" : "s") + " to " + p.cfg->name +
           (p.st.last_reply.empty() ? "" : " (" + p.st.last_reply + ")");
  }
  return true;
}

bool CallManager::failover(SysTime now,
                           const std::vector<queue::RouteStats>& stats) {
  std::vector<bool> state(peers_.size());
  std::vector<std::string> why(peers_.size());
  for (size_t i = 0; i < peers_.size(); ++i)
    state[i] = failing(*peers_[i], now, &why[i]);
  if (!reroute_dirty_ && state == failing_seen_) return false;
  reroute_dirty_ = false;
  failing_seen_ = state;

  auto index_of = [this](std::string_view name) -> int {
    for (size_t i = 0; i < peers_.size(); ++i) {
      if (peers_[i]->cfg->name == name) return static_cast<int>(i);
    }
    return -1;
  };
  // A peer in a call (placed or answered) keeps its mail: the session may
  // be about to load it.
  auto in_call = [this](const Peer& p) {
    if (p.call) return true;
    for (auto& w : incoming_) {
      if (auto c = w.lock(); c && c->peer == p.cfg->name) return true;
    }
    return false;
  };

  std::vector<queue::Transition> moves;
  std::vector<std::string> notes;
  for (const queue::RouteStats& rs : stats) {
    int from = index_of(rs.route);
    if (from < 0 || in_call(*peers_[from])) continue;
    // A healthy peer that backs up nobody keeps its mail: its queue is not
    // read (a scan runs on every arrival, so this is the common case).
    if (!state[from] && !backup_[from]) continue;
    const Peer& src = *peers_[from];
    bool ferry_peer = src.cfg->protocol == PeerConfig::Protocol::ferry;
    std::vector<queue::QueueId> ids;
    if (auto ec = spool_.route_messages(rs.route, ids)) {
      log::line("ferryd", "failover error=" + log::quote(ec.message()));
      continue;
    }
    for (const queue::QueueId& id : ids) {
      queue::MessageInfo mi;
      if (spool_.get(id, mi)) continue;  // gone meanwhile
      for (const queue::RecipientInfo& r : mi.recipients) {
        if (r.route != rs.route) continue;
        if (r.state != queue::RecipientState::queued &&
            r.state != queue::RecipientState::deferred)
          continue;
        if (ferry_peer && r.last_reply == kLinkLostReply) continue;
        std::vector<std::string> routes = router_.routes_for(domain_of(r.address));
        if (routes.size() < 2 ||
            std::find(routes.begin(), routes.end(), rs.route) == routes.end())
          continue;
        // The most preferred route that is not failing; none: stay.
        std::string target;
        std::string reason;
        for (const std::string& name : routes) {
          int k = index_of(name);
          if (k < 0) continue;
          if (!state[k]) {
            target = name;
            break;
          }
          if (reason.empty()) reason = why[k];
        }
        if (target.empty() || target == rs.route) continue;
        if (reason.empty()) reason = rs.route + " is not preferred";
        queue::Transition t;
        t.id = id;
        t.recipient = r.index;
        t.action = queue::Action::reroute;
        t.route = target;
        moves.push_back(std::move(t));
        notes.push_back("event=reroute to=<" + r.address + "> from=" +
                        rs.route + " route=" + target +
                        " reason=" + log::quote(reason));
      }
    }
  }
  if (moves.empty()) return false;
  std::vector<queue::TransitionResult> results;
  if (auto ec = spool_.apply(moves, results)) {
    log::line("ferryd", "failover error=" + log::quote(ec.message()));
    return false;
  }
  bool moved = false;
  for (size_t i = 0; i < moves.size(); ++i) {
    if (i < results.size() && results[i].ec) continue;  // it moved on
    log::line(moves[i].id, notes[i]);
    moved = true;
  }
  return moved;
}

// ---- calls ------------------------------------------------------------

void CallManager::emit(ActiveCall& call, Value event) {
  event["peer"] = call.peer;
  if (call.speed > 0 && !event.has("speed")) event["speed"] = call.speed;
  call.last = event;
  for (auto& w : call.watchers) {
    if (!w->finished() && w->client_connected()) w->progress(event);
  }
}

asio::awaitable<void> CallManager::place_call(Peer& p, size_t route_index,
                                              ModemSlot* slot) {
  std::shared_ptr<ActiveCall> call = p.call;
  const std::string route = p.sched.routes.at(route_index);
  CallOutcome out;
  out.route_index = route_index;
  out.start = clock_.now();
  auto wall_start = queue::Clock::now();
  std::string result, text;
  uint32_t moved = 0;
  uint64_t bps = 0;

  Value ev;
  ev["phase"] = "dialling";
  ev["text"] = route == "exec" ? "running " + p.cfg->command
                                : "dialling " + route;
  emit(*call, ev);

  std::unique_ptr<ExecLink> exec;  // outlives the transport over it
  std::unique_ptr<LinkTransport> transport;
  tcp::socket sock(io_);
  bool connected = false;
  if (slot == nullptr && route == "exec") {
    // The peer's command carries the link (gateway/exec_link.h).  Like a
    // modem's CONNECT, the line is up once the far end speaks: a command
    // that ends first (ssh refused, 127 not found) is a call not answered.
    std::string why;
    exec = ExecLink::start(io_.get_executor(), p.cfg->name, p.cfg->command,
                           ExecLinkOptions(), why);
    if (!exec) {
      out.failure = FailureClass::no_answer;
      out.reply = "the command cannot start: " + why;
    } else {
      ExecLink* link = exec.get();
      call->cancel = [link] { link->close(); };
      ExecLink::Ready ready = co_await exec->wait_ready(kExecAnswerLimit);
      if (ready == ExecLink::Ready::data) {
        connected = true;
        transport = make_link_transport(exec->socket());
      } else {
        call->cancel = nullptr;
        ExecStatus st = co_await exec->finish();
        out.failure = FailureClass::no_answer;
        out.reply = exec_no_link_reply(ready, st, exec->last_stderr());
      }
    }
  } else if (slot == nullptr) {
    // tcp:HOST:PORT
    tcp::endpoint ep;
    std::string why;
    if (!parse_listen_address(route.substr(4), ep, why)) {
      out.failure = FailureClass::config_error;
      out.reply = "bad route " + route + ": " + why;
    } else {
      asio::steady_timer limit(io_, std::chrono::seconds(60));
      limit.async_wait([&sock](boost::system::error_code e) {
        if (!e) sock.close();
      });
      auto [ec] = co_await sock.async_connect(ep, kTuple);
      limit.cancel();
      if (ec) {
        out.failure = FailureClass::no_answer;
        out.reply = ec.message();
      } else {
        connected = true;
        call->cancel = [&sock] {
          boost::system::error_code ignored;
          sock.close(ignored);
        };
        transport = make_link_transport(sock);
      }
    }
  } else if (slot->port) {
    // A direct line is always up: wake the far end and talk.
    boost::system::error_code wec;
    slot->port->flush_input();
    co_await asio::async_write(slot->port->descriptor(),
                               asio::buffer(kWakeLine),
                               asio::redirect_error(asio::use_awaitable, wec));
    if (wec) {
      out.failure = FailureClass::port_unavailable;
      out.reply = wec.message();
      slot->port.reset();
    } else {
      connected = true;
      slot->state = "connected";
      modem::SerialPort* port = slot->port.get();
      call->cancel = [port] { port->descriptor().cancel(); };
      transport = make_link_transport(slot->port->descriptor());
    }
  } else {
    slot->state = "dialling";
    std::string number = route;
    modem::CallResult r = co_await slot->m->dial(number);
    if (!r) {
      out.failure = classify_modem_error(r.ec);
      if (!out.failure) out.failure = FailureClass::protocol_error;
      out.reply = r.result_text.empty() ? r.ec.message() : r.result_text;
      if (r.ec == modem::ModemErrc::not_responding ||
          r.ec == modem::ModemErrc::port_io) {
        slot->m->close();
        slot->m.reset();
      }
    } else {
      connected = true;
      bps = r.connect.speed;
      slot->speed = bps;
      slot->state = "connected";
      call->speed = bps;
      modem::Modem* m = slot->m.get();
      call->cancel = [this, m] {
        asio::co_spawn(io_, m->hangup(), asio::detached);
      };
      transport = make_link_transport(slot->m->stream());
    }
  }

  if (connected) {
    out.connected = true;
    Value c;
    c["phase"] = "connected";
    c["text"] = bps > 0 ? "connected at " + std::to_string(bps) + " bit/s"
                        : "connected";
    emit(*call, c);
    // The longest call: hang up when it is reached.
    asio::steady_timer limit(io_);
    limit.expires_after(p.sched.limits.max_call);
    limit.async_wait([call](boost::system::error_code e) {
      if (!e && call->cancel) call->cancel();
    });
    auto t0 = std::chrono::steady_clock::now();
    LinkSession::ProgressFn progress = [this, call, t0](const LinkProgress& lp) {
      Value e;
      e["phase"] = lp.phase;
      e["bytes_out"] = lp.bytes_out;
      e["bytes_in"] = lp.bytes_in;
      if (lp.phase == "sending") {
        e["messages_done"] = lp.messages_done;
        e["messages_total"] = lp.messages_total;
        double secs = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
        if (secs > 0.5 && lp.payload_done > 0) {
          double rate = static_cast<double>(lp.payload_done) / secs;
          e["rate"] = static_cast<uint64_t>(rate);
          if (lp.payload_total >= lp.payload_done && rate > 0)
            e["eta"] = static_cast<uint64_t>(
                static_cast<double>(lp.payload_total - lp.payload_done) /
                rate);
        }
      } else if (lp.phase == "receiving") {
        e["messages_in"] = lp.messages_in;
      }
      emit(*call, std::move(e));
    };
    CallResult res;
    if (p.cfg->protocol == PeerConfig::Protocol::smtp) {
      // A plain MTA (the provider): standard ESMTP, gateway/smtp_client.h.
      SmtpClientOptions so;
      so.hostname = link_ctx_.options.hostname;
      so.starttls = p.cfg->smtp_starttls;
      so.auth_user = p.cfg->smtp_auth_user;
      if (!so.auth_user.empty()) {
        std::string why;
        if (!read_text_file(p.cfg->smtp_auth_password_file, so.auth_password,
                            why)) {
          log::line(p.cfg->name, "warning: smtp_auth_password_file: " + why);
        }
        so.auth_password =
            so.auth_password.substr(0, so.auth_password.find('\n'));
      }
      so.timeout = cfg_.link.timeout;
      so.atrn = p.cfg->atrn;
      so.atrn_domains = cfg_.local.domains;
      std::string rname = p.cfg->name;
      Value e;
      e["phase"] = "sending";
      emit(*call, e);
      res = co_await run_smtp_client(link_ctx_, std::move(transport), rname,
                                     so);
    } else {
      // A calling context with this peer's pin alone: a TLS client can
      // offer only one external PSK (gateway/peer_tls.h).
      LinkContext ctx = link_ctx_;
      std::unique_ptr<PeerTls> own;
      if (tls_client_) {
        std::string why;
        own = tls_client_->for_peer(p.cfg->name, why);
        if (own) ctx.tls_client = own.get();
      }
      LinkSession session(ctx, std::move(transport),
                          LinkSession::Role::caller, p.cfg->name);
      session.set_line_bps(bps);
      session.set_route(route);
      session.set_progress(progress);
      res = co_await session.run();
    }
    // Mail the provider keeps in a POP3 mailbox for us (multidrop).
    if (!p.cfg->pop3_server.empty()) {
      Value e;
      e["phase"] = "receiving";
      e["text"] = "collecting from POP3 " + p.cfg->pop3_server;
      emit(*call, e);
      FetchContext fc;
      fc.spool = &spool_;
      fc.router = &router_;
      fc.mail_root = cfg_.local.mail_root;
      fc.postmaster = cfg_.local.domains.empty()
                          ? std::string("postmaster")
                          : "postmaster@" + cfg_.local.domains.front();
      fc.max_message_size = cfg_.smtp.max_message_size;
      fc.run_pickup = false;  // ferryd's pickup runs after the call
      const PeerConfig& pc = *p.cfg;
      Pop3FetchResult fr = co_await fetch_pop3(io_.get_executor(), pc, fc);
      if (fr.ec) {
        log::line(p.cfg->name, "pop3 error=" + log::quote(fr.error));
      }
      res.messages_in += static_cast<uint32_t>(fr.stored);
    }
    limit.cancel();
    call->cancel = nullptr;
    moved = res.messages_out + res.messages_in;
    out.reply = res.result;
    if (res.result == "auth failed") {
      out.failure = FailureClass::auth_failed;
    } else if (res.ec) {
      out.failure = res.ec == std::errc::protocol_error
                        ? FailureClass::protocol_error
                        : FailureClass::dropped;
    }
    result = res.result;
    if (res.ec && !res.error.empty()) out.reply += ": " + res.error;
    text = "sent " + std::to_string(res.messages_out) + ", received " +
           std::to_string(res.messages_in) + " messages; " +
           std::to_string(res.bytes_out) + " bytes out, " +
           std::to_string(res.bytes_in) + " in";
    if (res.ec) text += "; the call failed: " + out.reply;
    if (slot != nullptr && slot->port) {
      // Nothing to hang up on a direct line; the session closed the
      // port, which the line's loop opens again.
      slot->port.reset();
    } else if (slot != nullptr && slot->m) {
      co_await slot->m->hangup();
    } else if (exec) {
      // Hang up and collect the command; why it ended helps a drop.
      ExecStatus st = co_await exec->finish();
      if (res.ec) out.reply += " (the command " + st.describe() + ")";
    } else {
      boost::system::error_code ignored;
      sock.close(ignored);
    }
  } else {
    // The dial failed: the session never ran, so the record is ours.
    result = out.failure ? std::string(to_string(*out.failure)) : "failed";
    text = "call failed: " + out.reply;
    queue::CallRecord rec;
    rec.peer = p.cfg->name;
    rec.start = wall_start;
    rec.end = queue::Clock::now();
    rec.result = result;
    rec.route = route;
    if (auto e = spool_.log_call(rec))
      log::line(p.cfg->name,
                "warning: cannot record the call: " + e.message());
  }
  if (slot != nullptr) {
    slot->state = (slot->m || slot->port) ? "idle" : "closed";
    slot->speed = 0;
    slot->peer.clear();
  }
  out.end = clock_.now();
  finish_call(p, out, outcome_word(out.failure, moved), text);
}

void CallManager::finish_call(Peer& p, const CallOutcome& out,
                              const std::string& outcome,
                              const std::string& text) {
  LineState* line = &tcp_line_;
  const std::string& route = p.sched.routes.at(out.route_index);
  reroute_dirty_ = true;
  if (needs_modem(route)) {
    for (auto& s : modems_) {
      if (s->peer == p.cfg->name || s->dial_peer == &p) line = &s->line;
    }
    if (line == &tcp_line_) line = &line_for(p);
  }
  OutcomeEffect eff = record_outcome(p.sched, p.st, *line, out, rng_);
  log::line(p.cfg->name, "event=call route=" + log::quote(route) +
                             " outcome=" + outcome + " " + eff.log);
  if (eff.reset_modem) {
    // The modem stopped answering: close it; its loop opens it again,
    // which resets it (ATZ and the init string).
    for (auto& sl : modems_) {
      if (&sl->line == line && sl->m && !sl->m->online()) {
        log::line("modem " + sl->cfg->name, "event=reset reason=" +
                                                log::quote(out.reply));
        sl->m->close();
        sl->m.reset();
      }
    }
  }
  if (eff.tell_postmaster) {
    log::line(p.cfg->name,
              "postmaster: " + log::quote(eff.postmaster_text));
    tell_postmaster(p.cfg->name, eff.postmaster_text);
  }
  p.retry = out.failure.has_value();
  if (!out.failure) {
    auto gap = std::max<std::chrono::seconds>(kSettle, p.sched.limits.min_gap);
    p.settle_until = out.end + gap;
  }
  if (p.call) {
    Value result;
    result["outcome"] = outcome;
    result["text"] = p.cfg->name + ": " + text;
    for (auto& w : p.call->watchers) {
      if (!w->finished()) w->done(result);
    }
  }
  p.call.reset();
  if (hooks_.after_call) hooks_.after_call();
  poke();
}

// A short mail to the postmaster from the null sender, on the pickup
// route so that ferryd's pickup delivers it like any local mail.
void CallManager::tell_postmaster(const std::string& peer,
                                  const std::string& text) {
  const std::string domain = cfg_.local.domains.empty()
                                 ? link_ctx_.options.hostname
                                 : cfg_.local.domains.front();
  queue::NewMessage nm;
  nm.queue_id = queue::new_queue_id();
  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000",
                std::gmtime(&now));
  nm.body = "From: Mail Delivery System <MAILER-DAEMON@" +
            link_ctx_.options.hostname + ">\r\n" + "To: postmaster@" +
            domain + "\r\n" + "Subject: ferry: calls to " + peer +
            " need attention\r\n" + "Date: " + date + "\r\n" +
            "Message-ID: <" + nm.queue_id + ".postmaster@" +
            link_ctx_.options.hostname + ">\r\n" +
            "Auto-Submitted: auto-generated\r\n\r\n" + text + "\r\n\r\n" +
            "Calls to " + peer + " stay stopped until you fix this; then\r\n" +
            "restart ferryd or call it by hand with: ferryctl dial " + peer +
            "\r\n";
  nm.recipients.push_back({"postmaster@" + domain, "", 0, "pickup"});
  queue::QueueId id;
  if (auto e = spool_.submit(std::move(nm), id)) {
    log::line(peer, "postmaster note not queued error=" +
                        log::quote(e.message()));
    return;
  }
  log::line(id, "postmaster note for peer=" + peer);
}

// ---- modems and answering ------------------------------------------------

asio::awaitable<void> CallManager::direct_loop(ModemSlot& slot) {
  const std::string id = "modem " + slot.cfg->name;
  while (!stopping_) {
    if (!slot.port) {
      slot.state = "opening";
      modem::LogFn logfn = [](std::string_view l) { log::line("ferryd", l); };
      std::unique_ptr<modem::SerialPort> port;
      std::error_code ec = modem::SerialPort::open(
          io_.get_executor(), slot.cfg->device, slot.cfg->profile,
          slot.cfg->name, logfn, port);
      if (ec) {
        slot.state = "unavailable";
        log::line(id, "event=open direct=yes error=" +
                          log::quote(ec.message()) + " retry_in=" +
                          std::to_string(kReopen.count()) + "s");
        slot.wake.expires_after(kReopen);
        co_await slot.wake.async_wait(kTuple);
        continue;
      }
      slot.port = std::move(port);
      slot.state = "idle";
      log::line(id, "event=open direct=yes");
      poke();
    }
    if (slot.dial_peer != nullptr) {
      Peer& p = *slot.dial_peer;
      size_t idx = slot.dial_route;
      co_await place_call(p, idx, &slot);
      slot.dial_peer = nullptr;
      continue;
    }
    if (!slot.cfg->answer) {
      slot.wake.expires_after(std::chrono::hours(1));
      co_await slot.wake.async_wait(kTuple);
      continue;
    }
    // Listen for the caller's wake line in slices, so a dial request is
    // seen within one slice.
    char buf[256];
    asio::steady_timer slice(io_, kListenSlice);
    modem::SerialPort* port = slot.port.get();
    slice.async_wait([port](boost::system::error_code e) {
      if (!e) port->descriptor().cancel();
    });
    auto [rec, n] = co_await slot.port->descriptor().async_read_some(
        asio::buffer(buf), kTuple);
    slice.cancel();
    if (stopping_) break;
    if (rec == asio::error::operation_aborted) continue;
    if (rec) {
      log::line(id, "event=read direct=yes error=" + log::quote(rec.message()));
      slot.port.reset();
      continue;
    }
    slot.wake_buf.append(buf, n);
    if (slot.wake_buf.find(kWakeLine) == std::string::npos) {
      if (slot.wake_buf.size() > 4096) slot.wake_buf.erase(0, 2048);
      continue;
    }
    slot.wake_buf.clear();
    slot.port->flush_input();  // a repeated wake line must not follow
    slot.state = "connected";
    auto call = std::make_shared<ActiveCall>();
    call->cancel = [port] { port->descriptor().cancel(); };
    std::unique_ptr<LinkTransport> t =
        make_link_transport(slot.port->descriptor());
    std::string where = "direct line " + slot.cfg->name;
    co_await answer_session(std::move(t), where, slot.cfg->profile.baud, call);
    slot.port.reset();  // the session closed it; opened again above
    slot.state = "idle";
  }
  if (slot.port) slot.port->close();
  slot.port.reset();
  slot.state = "closed";
}

asio::awaitable<void> CallManager::modem_loop(ModemSlot& slot) {
  const std::string id = "modem " + slot.cfg->name;
  if (slot.cfg->direct) {
    co_await direct_loop(slot);
    co_return;
  }
  while (!stopping_) {
    if (!slot.m) {
      slot.state = "opening";
      // (Named arguments, not temporaries, in the co_await: g++ 12
      // destroys temporaries of a co_await expression twice.)
      modem::LogFn logfn = [](std::string_view l) {
        log::line("ferryd", l);
      };
      std::string device = slot.cfg->device;
      modem::ModemProfile profile = slot.cfg->profile;
      std::string lock_dir = cfg_.lock_dir;
      modem::Modem::OpenResult opened = co_await modem::Modem::open(
          io_.get_executor(), device, profile, lock_dir, logfn);
      std::error_code ec = opened.ec;
      if (ec) {
        slot.state = "unavailable";
        log::line(id, "event=open error=" + log::quote(ec.message()) +
                          " retry_in=" + std::to_string(kReopen.count()) +
                          "s");
        if (slot.dial_peer != nullptr) {
          Peer& p = *slot.dial_peer;
          slot.dial_peer = nullptr;
          CallOutcome out;
          out.route_index = slot.dial_route;
          out.start = out.end = clock_.now();
          out.failure = classify_modem_error(ec);
          if (!out.failure) out.failure = FailureClass::port_unavailable;
          out.reply = ec.message();
          finish_call(p, out, "failed", "modem " + slot.cfg->name + ": " +
                                            ec.message());
        }
        slot.wake.expires_after(kReopen);
        co_await slot.wake.async_wait(kTuple);
        continue;
      }
      slot.m = std::move(opened.modem);
      slot.state = "idle";
      poke();
    }
    if (slot.dial_peer != nullptr) {
      Peer& p = *slot.dial_peer;
      size_t idx = slot.dial_route;
      co_await place_call(p, idx, &slot);
      slot.dial_peer = nullptr;
      continue;
    }
    if (slot.cfg->answer) {
      modem::CallResult r = co_await slot.m->wait_for_call(kListenSlice);
      if (stopping_) break;
      if (r) {
        slot.state = "connected";
        slot.speed = r.connect.speed;
        auto call = std::make_shared<ActiveCall>();
        call->speed = r.connect.speed;
        modem::Modem* m = slot.m.get();
        call->cancel = [this, m] {
          asio::co_spawn(io_, m->hangup(), asio::detached);
        };
        std::unique_ptr<LinkTransport> t =
            make_link_transport(slot.m->stream());
        std::string where = "modem " + slot.cfg->name;
        co_await answer_session(std::move(t), where, r.connect.speed, call);
        if (slot.m) co_await slot.m->hangup();
        slot.state = "idle";
        slot.speed = 0;
        slot.peer.clear();
        continue;
      }
      if (r.ec == modem::ModemErrc::no_call) continue;
      log::line(id, "event=answer error=" + log::quote(r.ec.message()));
      if (r.ec == modem::ModemErrc::not_responding ||
          r.ec == modem::ModemErrc::port_io ||
          r.ec == modem::ModemErrc::port_unavailable) {
        slot.m->close();
        slot.m.reset();
      }
      continue;
    }
    slot.state = "idle";
    slot.wake.expires_after(std::chrono::hours(1));
    co_await slot.wake.async_wait(kTuple);
  }
  if (slot.m) {
    if (slot.m->online()) co_await slot.m->hangup();
    slot.m->close();
    slot.m.reset();
  }
  slot.state = "closed";
}

asio::awaitable<void> CallManager::link_accept_loop(tcp::acceptor& acceptor) {
  while (!stopping_) {
    auto [ec, sock] = co_await acceptor.async_accept(kTuple);
    if (ec == asio::error::operation_aborted || stopping_) break;
    if (ec) {
      log::line("ferryd", "link accept error=" + log::quote(ec.message()));
      asio::steady_timer t(io_, std::chrono::milliseconds(100));
      co_await t.async_wait(kTuple);
      continue;
    }
    auto s = std::make_shared<tcp::socket>(std::move(sock));
    std::string where = "tcp";
    boost::system::error_code e2;
    auto ep = s->remote_endpoint(e2);
    if (!e2) where = "tcp " + ep.address().to_string();
    asio::co_spawn(
        io_,
        [this, s, where]() -> asio::awaitable<void> {
          auto call = std::make_shared<ActiveCall>();
          call->cancel = [s] {
            boost::system::error_code ignored;
            s->close(ignored);
          };
          std::unique_ptr<LinkTransport> t = make_link_transport(*s);
          co_await answer_session(std::move(t), where, 0, call);
        },
        asio::detached);
  }
}

asio::awaitable<void> CallManager::answer_session(
    std::unique_ptr<LinkTransport> t, std::string where, uint64_t bps,
    std::shared_ptr<ActiveCall> call) {
  log::line("ferryd", "event=answer via=" + log::quote(where));
  incoming_.push_back(call);  // so that stop() can hang it up
  LinkSession session(link_ctx_, std::move(t), LinkSession::Role::answerer,
                      "");
  session.set_line_bps(bps);
  // Who called, once known: failover and `ferryctl dial` leave that
  // peer's mail alone while its call lasts.
  LinkSession::ProgressFn who = [call](const LinkProgress& lp) {
    if (call->peer.empty()) call->peer = lp.peer;
  };
  session.set_progress(who);
  CallResult res = co_await session.run();
  // A call a peer placed to us counts as a successful exchange with it
  // (lifetimes count missed opportunities from the last success).
  if (!res.peer.empty() && !res.ec) {
    for (auto& p : peers_) {
      if (p->cfg->name == res.peer) p->st.last_success = clock_.now();
    }
  }
  call->cancel = nullptr;
  std::erase_if(incoming_, [](const std::weak_ptr<ActiveCall>& w) {
    return w.expired();
  });
  if (hooks_.after_call) hooks_.after_call();
  poke();
}

// ---- the control socket ------------------------------------------------

void CallManager::register_commands(ControlServer& control) {
  control.add_command(
      "dial",
      [this](const Value& args, std::shared_ptr<ControlReply> r) {
        dial_command(args, std::move(r));
      },
      "call a peer now (args: peer, wait); streams progress");
  control.add_command(
      "why",
      [this](const Value& args, std::shared_ptr<ControlReply> r) {
        std::string name = args["peer"].as_string();
        for (auto& p : peers_) {
          if (p->cfg->name != name) continue;
          SysTime now = clock_.now();
          Value v;
          v["peer"] = name;
          if (p->call) {
            v["calling"] = true;
            v["text"] = name + ": in a call now";
          } else if (!p->decided) {
            v["calling"] = false;
            v["text"] = name + ": not decided yet (ferryd just started)";
          } else if (!p->cfg->dial || p->sched.routes.empty()) {
            v["calling"] = false;
            v["text"] = name + ": not calling: " + p->last.reason;
          } else {
            v["calling"] = p->last.call;
            v["text"] = why_line(p->sched, p->last, now);
          }
          v["reason"] = p->last.reason;
          v["next_call"] = p->last.next ? Value(epoch(*p->last.next)) : Value();
          if (p->st.last_failure) {
            v["last_failure"] = std::string(to_string(*p->st.last_failure));
            v["last_reply"] = p->st.last_reply;
          }
          if (p->st.stopped) v["stopped"] = p->st.stopped_reason;
          r->done(std::move(v));
          return;
        }
        r->fail("not_found", "no peer '" + name + "' in the configuration");
      },
      "why a peer was or was not called, and the next call (args: peer)");
  // `ferryctl calls` cost: the peer's tariff for a connected call (one
  // that carried bytes), per started minute.
  control.set_call_cost(
      [this](const queue::CallRecord& c) -> std::optional<double> {
        for (const auto& p : peers_) {
          if (p->cfg->name != c.peer) continue;
          if (p->cfg->cost_per_call == 0 && p->cfg->cost_per_minute == 0)
            return std::nullopt;
          if (c.bytes_out + c.bytes_in == 0) return 0.0;
          double secs = std::chrono::duration<double>(c.end - c.start).count();
          double minutes = std::ceil(std::max(secs, 0.001) / 60.0);
          return p->cfg->cost_per_call + p->cfg->cost_per_minute * minutes;
        }
        return std::nullopt;
      });
  control.add_status_provider("modems", [this] { return modems_status(); });
  control.add_status_provider("peers", [this] { return peers_status(); });
}

size_t CallManager::flush() {
  size_t n = 0;
  for (auto& p : peers_) {
    if (p->cfg->dial && !p->sched.routes.empty()) {
      p->flush = true;
      ++n;
    }
  }
  poke();
  return n;
}

void CallManager::dial_command(const Value& args,
                               std::shared_ptr<ControlReply> reply) {
  std::string name = args["peer"].as_string();
  bool wait = args["wait"].is_bool() && args["wait"].as_bool();
  Peer* peer = nullptr;
  for (auto& p : peers_) {
    if (p->cfg->name == name) peer = p.get();
  }
  if (peer == nullptr) {
    reply->fail("not_found", "no peer '" + name + "' in the configuration");
    return;
  }
  if (peer->sched.routes.empty()) {
    reply->fail("bad_state", name + " has no routes to call (it calls us: "
                                    "hold for pickup)");
    return;
  }
  if (peer->call) {
    // Attach to the call already under way.
    if (!wait) {
      Value v;
      v["outcome"] = "ok";
      v["text"] = name + ": a call is already in progress";
      reply->done(std::move(v));
      return;
    }
    if (!peer->call->last.is_null()) reply->progress(peer->call->last);
    peer->call->watchers.push_back(std::move(reply));
    return;
  }
  // The peer called us: its call is answered here, and both queues
  // cross in it; a second line to the same peer would only compete.
  for (auto& w : incoming_) {
    if (auto c = w.lock(); c && c->peer == name) {
      Value v;
      v["outcome"] = "ok";
      v["text"] = name + ": " + name +
                  " has called us; both queues cross in that call";
      reply->done(std::move(v));
      return;
    }
  }
  peer->manual = true;
  if (wait) {
    peer->waiting.push_back(std::move(reply));
  } else {
    Value v;
    v["outcome"] = "ok";
    v["text"] = name + ": call requested";
    reply->done(std::move(v));
  }
  poke();
}

Value CallManager::modems_status() const {
  Value arr = json::Array{};
  for (const auto& s : modems_) {
    Value m;
    m["name"] = s->cfg->name;
    m["device"] = s->cfg->device;
    std::string state = s->state;
    if (state == "idle" && s->cfg->answer) state = "idle (answering)";
    if (s->line.out_of_service) state = "out of service";
    m["state"] = state;
    m["speed"] = s->speed > 0 ? Value(s->speed) : Value();
    m["peer"] = s->peer.empty() ? Value() : Value(s->peer);
    arr.array().push_back(std::move(m));
  }
  return arr;
}

Value CallManager::peers_status() {
  SysTime now = clock_.now();
  std::vector<queue::RouteStats> stats;
  spool_.route_stats(stats);
  std::vector<queue::CallRecord> calls;
  spool_.calls(0, calls);
  Value arr = json::Array{};
  auto add = [&](const std::string& name, Peer* p) {
    Value v;
    v["name"] = name;
    v["messages"] = uint64_t{0};
    v["recipients"] = uint64_t{0};
    v["bytes"] = uint64_t{0};
    v["stored_bytes"] = uint64_t{0};
    v["oldest_age"] = Value();
    for (const auto& s : stats) {
      if (s.route != name) continue;
      v["messages"] = s.messages;
      v["recipients"] = s.recipients;
      v["bytes"] = s.bytes;
      v["stored_bytes"] = s.stored_bytes;
      v["oldest"] = epoch(s.oldest);
      v["oldest_age"] = static_cast<int64_t>(
          std::chrono::duration_cast<std::chrono::seconds>(now - s.oldest)
              .count());
    }
    if (p != nullptr) {
      v["in_call"] = p->call != nullptr;
      v["next_call"] =
          p->last.next ? Value(epoch(*p->last.next)) : Value();
      v["next_call_reason"] =
          p->call ? std::string("in a call now") : p->last.reason;
      // Failover (calls.h): while failing, mail another peer also
      // serves goes there.
      std::string why;
      v["failing"] = failing(*p, now, &why);
      v["failing_reason"] = why.empty() ? Value() : Value(why);
    } else {
      v["next_call"] = Value();
      v["next_call_reason"] = "not a configured peer";
    }
    for (auto c = calls.rbegin(); c != calls.rend(); ++c) {
      if (c->peer != name) continue;
      v["last_call"]["start"] = epoch(c->start);
      v["last_call"]["result"] = c->result;
      break;
    }
    arr.array().push_back(std::move(v));
  };
  for (const auto& p : peers_) add(p->cfg->name, p.get());
  // Routes with mail that no [peer] section names (a removed peer, the
  // smarthost route without a peer): shown so nothing hides.
  for (const auto& s : stats) {
    if (s.route == kLocalRoute || s.route == "pickup") continue;
    bool known = false;
    for (const auto& p : peers_) known |= p->cfg->name == s.route;
    if (!known) add(s.route, nullptr);
  }
  return arr;
}

std::optional<CallManager::RouteLife> CallManager::route_life(
    const std::string& route, SysTime arrival) const {
  for (const auto& p : peers_) {
    if (p->cfg->name != route) continue;
    RouteLife l;
    l.lifetime = p->sched.lifetime;
    l.missed = missed_since(p->st, arrival);
    l.next_call = p->last.next;
    return l;
  }
  return std::nullopt;
}

}  // namespace ferry::gw
