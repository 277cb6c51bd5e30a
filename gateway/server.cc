#include "gateway/server.h"

#include <grp.h>

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <exception>

#include "gateway/log.h"
#include "gateway/sd_listen.h"
#include "gateway/pickup.h"

namespace ferry::gw {

namespace asio = boost::asio;
using asio::ip::tcp;

bool parse_listen_address(const std::string& text, tcp::endpoint& out,
                          std::string& error) {
  std::string host, port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      error = "expected [IPv6]:port, got '" + text + "'";
      return false;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      error = "expected address:port, got '" + text + "'";
      return false;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    error = "not an IP address: '" + host + "'";
    return false;
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535) {
    error = "bad port '" + port + "'";
    return false;
  }
  out = tcp::endpoint(addr, static_cast<unsigned short>(std::stoul(port)));
  return true;
}

Server::Server(const Config& cfg, const Users& users, const Policy& policy,
               queue::Spool& spool)
    : cfg_(cfg) {
  ctx_.cfg = &cfg;
  ctx_.users = &users;
  ctx_.policy = &policy;
  ctx_.spool = &spool;
  ctx_.disk = &disk_;
  ctx_.hostname = cfg.hostname;
  if (ctx_.hostname.empty()) {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) == 0) ctx_.hostname = buf;
    if (ctx_.hostname.empty()) ctx_.hostname = "localhost";
  }
}

Server::~Server() { disk_.join(); }

bool Server::start(std::string& error) {
  // TLS: both files or neither.
  if (!cfg_.tls.certificate.empty() || !cfg_.tls.key.empty()) {
    tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    boost::system::error_code ec;
    tls_->set_options(
        asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
            asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
            asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use,
        ec);
    if (!ec) tls_->use_certificate_chain_file(cfg_.tls.certificate, ec);
    if (ec) {
      error = "[tls] certificate " + cfg_.tls.certificate + ": " + ec.message();
      return false;
    }
    tls_->use_private_key_file(cfg_.tls.key, asio::ssl::context::pem, ec);
    if (ec) {
      error = "[tls] key " + cfg_.tls.key + ": " + ec.message();
      return false;
    }
    ctx_.tls = tls_.get();
  }

  // Listeners.
  for (const auto& lc : cfg_.listeners) {
    tcp::endpoint ep;
    std::string why;
    if (!parse_listen_address(lc.address, ep, why)) {
      error = "[listener " + lc.name + "] address: " + why;
      listeners_.clear();
      return false;
    }
    auto l = std::make_unique<Listener>(Listener{&lc, tcp::acceptor(io_)});
    boost::system::error_code ec;
    l->acceptor.open(ep.protocol(), ec);
    if (!ec) l->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && ep.address().is_v6()) {
      l->acceptor.set_option(asio::ip::v6_only(true), ec);
    }
    if (!ec) l->acceptor.bind(ep, ec);
    if (!ec) l->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      error = "[listener " + lc.name + "] " + lc.address + ": " + ec.message();
      listeners_.clear();
      return false;
    }
    listeners_.push_back(std::move(l));
  }
  if (listeners_.empty()) {
    error = "no [listener NAME] sections: nothing to serve";
    return false;
  }

  // The control socket for ferryctl (gateway/control.h).
  ControlOptions copts;
  copts.path = cfg_.control_socket;
  copts.mode = cfg_.control_mode;
  if (!cfg_.control_group.empty()) {
    struct group* g = ::getgrnam(cfg_.control_group.c_str());
    if (g == nullptr) {
      error = "[ferryd] control_group: no group named '" +
              cfg_.control_group + "'";
      listeners_.clear();
      return false;
    }
    copts.group = g->gr_gid;
  }
  {
    std::string why;
    copts.inherited_fd = inherited_unix_listener(cfg_.control_socket, why);
    if (copts.inherited_fd < 0 && !why.empty()) {
      error = why;
      listeners_.clear();
      return false;
    }
  }
  control_ = std::make_unique<ControlServer>(io_, *ctx_.spool, copts);
  if (!control_->start(error)) {
    control_.reset();
    listeners_.clear();
    return false;
  }

  // POP3 for office clients, one listener per [pop3] listen address.
  for (const auto& address : cfg_.pop3.listen) {
    Pop3Options o;
    o.name = "pop3";
    o.address = address;
    o.trusted_local = cfg_.pop3.trusted_local;
    o.idle_timeout = cfg_.pop3.idle_timeout;
    o.max_sessions = cfg_.pop3.max_sessions;
    o.mail_root = cfg_.local.mail_root;
    std::string why;
    auto l = run_pop3_listener(io_, o, *ctx_.users, tls_.get(), &disk_, why);
    if (!l) {
      error = "[pop3] listen " + address + ": " + why;
      pop3_.clear();
      control_->stop();
      control_.reset();
      listeners_.clear();
      return false;
    }
    log::line("ferryd", "listening pop3 address=" + log::quote(address) +
                            " port=" +
                            std::to_string(l->local_endpoint().port()));
    pop3_.push_back(std::move(l));
  }

  // Calls (gateway/calls.h): modems, link listeners, dial/why/status.
  if (router_ != nullptr) {
    CallManagerHooks hooks = hooks_;
    if (notifier_ != nullptr && !hooks.apply) {
      Notifier* n = notifier_;
      hooks.apply = [n](const std::vector<queue::Transition>& ts,
                        std::vector<queue::TransitionResult>& out) {
        return n->apply(ts, out);
      };
      // Mail received with a recipient refused here (unknown user).
      if (!hooks.on_failed) {
        hooks.on_failed = [n](const queue::QueueId& id) {
          if (auto e = n->on_failed(id))
            log::line(id, "dsn error=" + log::quote(e.message()));
        };
      }
    }
    auto after = hooks.after_call;
    hooks.after_call = [this, after] {
      // Mail a call brought in on the pickup route (POP3, notifications).
      run_pickup();
      if (after) after();
    };
    calls_ = std::make_unique<CallManager>(io_, cfg_, *ctx_.spool, *router_,
                                           *ctx_.users, *clock_, hooks);
    if (!calls_->start(*control_, error)) {
      calls_.reset();
      pop3_.clear();
      control_->stop();
      control_.reset();
      listeners_.clear();
      return false;
    }
  }

  // Mail from ferry-sendmail: "pickup" runs it now; "flush" (sendmail -q)
  // does the same and asks for calls to every peer with mail.
  control_->add_command(
      "pickup",
      [this](const json::Value&, std::shared_ptr<ControlReply> reply) {
        run_pickup();
        reply->done(json::Value(json::Object{}));
      },
      "deliver the mail ferry-sendmail left in the spool now");
  control_->add_command(
      "flush",
      [this](const json::Value&, std::shared_ptr<ControlReply> reply) {
        run_pickup();
        if (!calls_) {
          reply->fail("not_available",
                      "no peers are configured in this ferryd, so there is "
                      "nobody to call (mail from ferry-sendmail was picked "
                      "up)");
          return;
        }
        json::Value v;
        v["peers"] = static_cast<uint64_t>(calls_->flush());
        reply->done(std::move(v));
      },
      "deliver mail from ferry-sendmail and ask for calls now (sendmail "
      "-q)");
  return true;
}

void Server::enable_calls(const ConfigRouter& router, const Clock& clock,
                          CallManagerHooks hooks) {
  router_ = &router;
  clock_ = &clock;
  hooks_ = std::move(hooks);
}

void Server::post(std::function<void()> fn) { asio::post(io_, std::move(fn)); }

void Server::enable_notify(Notifier& n, std::chrono::milliseconds every) {
  notifier_ = &n;
  sweep_every_ = every;
}

void Server::want_pickup() {
  asio::post(io_, [this] { run_pickup(); });
}

// Delay warnings and lifetimes (Notifier::sweep) on ferryd's thread: the
// lookup reads the call manager's scheduler state, which lives there.
void Server::arm_sweep_timer() {
  sweep_timer_.expires_after(sweep_every_);
  sweep_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_) return;
    LifetimeLookup lookup;
    CallManager* calls = calls_.get();
    lookup.lifetime = [calls](const std::string& route, SysTime arrival)
        -> std::optional<RouteLifetime> {
      if (calls == nullptr) return std::nullopt;
      auto l = calls->route_life(route, arrival);
      if (!l) return std::nullopt;
      return RouteLifetime{l->lifetime, l->missed};
    };
    lookup.next_call = [calls](const std::string& route)
        -> std::optional<SysTime> {
      if (calls == nullptr) return std::nullopt;
      auto l = calls->route_life(route, SysClock::now());
      return l ? l->next_call : std::nullopt;
    };
    const Clock& clock =
        clock_ != nullptr ? *clock_ : SystemClock::instance();
    if (auto e = notifier_->sweep(clock.now(), lookup))
      log::line("ferryd", "sweep error=" + log::quote(e.message()));
    arm_sweep_timer();
  });
}

void Server::run_pickup() {
  if (stopping_) return;
  if (pickup_running_) {
    pickup_again_ = true;
    return;
  }
  pickup_running_ = true;
  // The run blocks on Maildir fsyncs and spool commits: disk pool.
  asio::post(disk_, [this] {
    PickupOptions opts;
    opts.mail_root = cfg_.local.mail_root;
    if (Notifier* n = notifier_) {
      opts.apply = [n](const std::vector<queue::Transition>& ts,
                       std::vector<queue::TransitionResult>& out) {
        return n->apply(ts, out);
      };
    }
    PickupResult result;
    std::error_code ec =
        process_pickup(*ctx_.spool, *ctx_.policy, opts, result);
    asio::post(io_, [this, ec, result] {
      if (ec) {
        log::line("ferryd", "pickup error=" + log::quote(ec.message()));
      } else if (result.messages > 0 || result.deferred > 0) {
        log::line("ferryd",
                  "pickup messages=" + std::to_string(result.messages) +
                      " local=" + std::to_string(result.local) +
                      " resubmitted=" + std::to_string(result.resubmitted) +
                      " failed=" + std::to_string(result.failed) +
                      " deferred=" + std::to_string(result.deferred));
      }
      pickup_running_ = false;
      if (calls_ && result.resubmitted > 0) calls_->poke();
      if (pickup_again_) {
        pickup_again_ = false;
        run_pickup();
      }
    });
  });
}

void Server::arm_pickup_timer() {
  pickup_timer_.expires_after(std::chrono::minutes(1));
  pickup_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping_) return;
    run_pickup();
    arm_pickup_timer();
  });
}

int Server::run() {
  for (auto& l : listeners_) {
    auto ep = l->acceptor.local_endpoint();
    log::line("ferryd", "listening listener=" + log::quote(l->cfg->name) +
                            " address=" + log::quote(l->cfg->address) +
                            " port=" + std::to_string(ep.port()) + " mode=" +
                            (l->cfg->mode == ListenerConfig::Mode::submission
                                 ? "submission"
                                 : "relay"));
    asio::co_spawn(io_, accept_loop(*l), asio::detached);
  }
  run_pickup();
  arm_pickup_timer();
  if (calls_) calls_->run();
  if (notifier_ != nullptr) arm_sweep_timer();
  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.async_wait([this](boost::system::error_code ec, int sig) {
    if (ec) return;
    log::line("ferryd", "signal=" + std::to_string(sig) + " stopping");
    do_stop();
  });
  io_.run();
  log::line("ferryd", "stopped");
  return 0;
}

void Server::stop() {
  asio::post(io_, [this] { do_stop(); });
}

void Server::do_stop() {
  if (stopping_) return;
  stopping_ = true;
  boost::system::error_code ec;
  signals_.cancel(ec);
  for (auto& l : listeners_) l->acceptor.close(ec);
  if (control_) control_->stop();
  for (auto& l : pop3_) l->stop();
  pickup_timer_.cancel();
  if (calls_) calls_->stop();
  sweep_timer_.cancel();
  for (auto& w : sessions_) {
    if (auto s = w.lock()) s->stop();
  }
}

asio::awaitable<void> Server::accept_loop(Listener& l) {
  constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
  while (!stopping_) {
    auto [ec, socket] = co_await l.acceptor.async_accept(kTuple);
    if (ec == asio::error::operation_aborted || stopping_) break;
    if (ec) {
      // EMFILE and friends: say so, pause briefly, carry on.
      log::line("ferryd", "accept error=" + log::quote(ec.message()));
      asio::steady_timer t(io_, std::chrono::milliseconds(100));
      co_await t.async_wait(kTuple);
      continue;
    }
    // Drop sessions that have ended from the registry.
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      it = it->expired() ? sessions_.erase(it) : std::next(it);
    }
    bool busy = sessions_.size() >= cfg_.smtp.max_sessions;
    std::string sid = "S" + make_message_id().substr(4);
    auto session =
        std::make_shared<SmtpSession>(ctx_, *l.cfg, std::move(socket), sid);
    sessions_.insert(session);
    // The lambda (and so the session) lives as long as the coroutine.
    asio::co_spawn(
        io_, [session, busy] { return session->run(busy); },
        [sid](std::exception_ptr e) {
          if (!e) return;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& x) {
            log::line(sid,
                      std::string("panic exception=") + log::quote(x.what()));
          }
        });
  }
}

}  // namespace ferry::gw
