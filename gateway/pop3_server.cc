#include "gateway/pop3_server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <set>
#include <utility>

#include "gateway/log.h"
#include "gateway/server.h"  // parse_listen_address

namespace ferry::gw {

namespace asio = boost::asio;
using asio::awaitable;
using tcp = asio::ip::tcp;

struct Pop3Listener::State {
  State(asio::io_context& io, std::shared_ptr<const Pop3Context> c)
      : ctx(std::move(c)), acceptor(io) {}
  std::shared_ptr<const Pop3Context> ctx;
  tcp::acceptor acceptor;
  tcp::endpoint endpoint;
  std::set<std::weak_ptr<Pop3Session>,
           std::owner_less<std::weak_ptr<Pop3Session>>>
      sessions;
  bool stopped = false;
};

namespace {

using State = Pop3Listener::State;

awaitable<void> run_session(std::shared_ptr<State> st,
                            std::shared_ptr<Pop3Session> s, bool busy) {
  co_await s->run(busy);
  st->sessions.erase(s);
}

awaitable<void> accept_loop(std::shared_ptr<State> st) {
  auto tuple = asio::as_tuple(asio::use_awaitable);
  for (;;) {
    auto [ec, socket] = co_await st->acceptor.async_accept(tuple);
    if (st->stopped || ec == asio::error::operation_aborted) break;
    if (ec) {
      // Out of descriptors and the like: note it and keep serving.
      log::line("pop3", "accept listener=" + st->ctx->options.name +
                            " error=" + log::quote(ec.message()));
      continue;
    }
    bool busy = st->sessions.size() >= st->ctx->options.max_sessions;
    auto s = std::make_shared<Pop3Session>(st->ctx, std::move(socket),
                                           make_pop3_session_id());
    st->sessions.insert(s);
    asio::co_spawn(st->acceptor.get_executor(), run_session(st, s, busy),
                   asio::detached);
  }
}

void stop_state(const std::shared_ptr<State>& st) {
  if (st->stopped) return;
  st->stopped = true;
  boost::system::error_code ignored;
  st->acceptor.close(ignored);
  for (const auto& w : st->sessions) {
    if (auto s = w.lock()) s->stop();
  }
}

}  // namespace

Pop3Listener::Pop3Listener(std::shared_ptr<State> state)
    : state_(std::move(state)) {}

Pop3Listener::~Pop3Listener() { stop(); }

tcp::endpoint Pop3Listener::local_endpoint() const { return state_->endpoint; }

void Pop3Listener::stop() { stop_state(state_); }

size_t Pop3Listener::sessions() const { return state_->sessions.size(); }

std::unique_ptr<Pop3Listener> run_pop3_listener(
    asio::io_context& io, const Pop3Options& options, const Users& users,
    asio::ssl::context* tls, asio::thread_pool* disk, std::string& error) {
  auto ctx = std::make_shared<Pop3Context>();
  ctx->options = options;
  ctx->users = &users;
  ctx->tls = tls;
  ctx->disk = disk;

  // Bind.
  tcp::endpoint ep;
  std::string why;
  if (!parse_listen_address(options.address, ep, why)) {
    error = options.address + ": " + why;
    return nullptr;
  }
  auto st = std::make_shared<State>(io, std::move(ctx));
  boost::system::error_code ec;
  st->acceptor.open(ep.protocol(), ec);
  if (!ec) st->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) st->acceptor.bind(ep, ec);
  if (!ec) st->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) st->endpoint = st->acceptor.local_endpoint(ec);
  if (ec) {
    error = options.address + ": " + ec.message();
    return nullptr;
  }

  // Serve.
  log::line("pop3",
            "listening listener=" + options.name +
                " address=" + st->endpoint.address().to_string() + ":" +
                std::to_string(st->endpoint.port()) +
                " trusted_local=" + (options.trusted_local ? "yes" : "no") +
                " stls=" + (tls != nullptr ? "yes" : "no"));
  asio::co_spawn(io, accept_loop(st), asio::detached);
  return std::make_unique<Pop3Listener>(std::move(st));
}

}  // namespace ferry::gw
