#include "gateway/pop3_fetch.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "gateway/address.h"
#include "gateway/link_session.h"
#include "gateway/log.h"
#include "gateway/router.h"

namespace ferry::gw {

namespace {

using tcp = asio::ip::tcp;

class Pop3FetchCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "pop3_fetch"; }
  std::string message(int ev) const override {
    switch (static_cast<pop3_fetch_errc>(ev)) {
      case pop3_fetch_errc::ok:
        return "ok";
      case pop3_fetch_errc::bad_config:
        return "bad POP3 configuration";
      case pop3_fetch_errc::connect_failed:
        return "cannot connect to the POP3 server";
      case pop3_fetch_errc::timeout:
        return "the POP3 server fell silent";
      case pop3_fetch_errc::dropped:
        return "the POP3 connection was closed";
      case pop3_fetch_errc::protocol:
        return "unreadable POP3 reply";
      case pop3_fetch_errc::tls_refused:
        return "STLS required but refused";
      case pop3_fetch_errc::tls_failed:
        return "TLS handshake failed";
      case pop3_fetch_errc::auth_failed:
        return "POP3 login refused";
      case pop3_fetch_errc::no_uidl:
        return "POP3 server has no UIDL";
      case pop3_fetch_errc::server_error:
        return "POP3 command refused";
    }
    return "unknown pop3_fetch error";
  }
};

// Longest reply line we accept.  RFC 1939 limits status lines to 512
// octets; message lines are bounded only by the message size, so this is
// generous (RFC 5322 allows 998, real mail sometimes has more).
constexpr size_t kMaxLine = 1 << 20;

bool iequals(std::string_view a, std::string_view b) {
  auto lower = [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  };
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(),
                    [&](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// The header fields of `message` as (name, unfolded value) pairs, up to
// the first empty line.
std::vector<std::pair<std::string, std::string>> header_fields(
    std::string_view message) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < message.size()) {
    size_t eol = message.find('\n', pos);
    if (eol == std::string_view::npos) eol = message.size();
    std::string_view line = message.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // end of the header section
    if (line.front() == ' ' || line.front() == '\t') {
      if (!out.empty()) {
        out.back().second += ' ';
        out.back().second += trim(line);
      }
      continue;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;  // not a field: ignore
    out.emplace_back(std::string(trim(line.substr(0, colon))),
                     std::string(trim(line.substr(colon + 1))));
  }
  return out;
}

// Drops RFC 5322 comments "(...)" outside quoted strings.
std::string strip_comments(std::string_view v) {
  std::string out;
  int depth = 0;
  bool quoted = false;
  for (size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c == '\\' && i + 1 < v.size()) {
      if (depth == 0) {
        out += c;
        out += v[i + 1];
      }
      ++i;
      continue;
    }
    if (depth == 0 && c == '"') quoted = !quoted;
    if (!quoted && c == '(') {
      ++depth;
      continue;
    }
    if (!quoted && c == ')' && depth > 0) {
      --depth;
      continue;
    }
    if (depth == 0) out += c;
  }
  return out;
}

// Splits at commas outside quoted strings and angle brackets.
std::vector<std::string> split_list(std::string_view v) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  int angle = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c == '\\' && i + 1 < v.size()) {
      cur += c;
      cur += v[++i];
      continue;
    }
    if (c == '"') quoted = !quoted;
    if (!quoted && c == '<') ++angle;
    if (!quoted && c == '>' && angle > 0) --angle;
    if (c == ',' && !quoted && angle == 0) {
      out.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    cur += c;
  }
  out.push_back(std::move(cur));
  return out;
}

// "Name <a@b>", "<a@b>" or "a@b" -> "a@b" with a lower-case domain; ""
// when it is not an address with a domain.
std::string normalise_address(std::string_view item) {
  std::string_view s = trim(item);
  size_t lt = s.rfind('<');
  if (lt != std::string_view::npos) {
    size_t gt = s.find('>', lt);
    if (gt == std::string_view::npos) return "";
    s = s.substr(lt + 1, gt - lt - 1);
  }
  s = trim(s);
  if (s.empty()) return "";
  PathParse p = parse_path("<" + std::string(s) + ">");
  if (!p.ok || p.null_path || p.box.domain.empty() || !p.rest.empty()) {
    return "";
  }
  p.box.domain = lower_ascii(p.box.domain);
  return p.box.str();
}

// The parts of "HOST:PORT" / "[HOST]:PORT"; false if malformed.
bool parse_server(std::string_view s, tcp::endpoint& ep) {
  std::string host;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() ||
        s[close + 1] != ':') {
      return false;
    }
    host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  unsigned long p = std::stoul(std::string(port));
  if (p == 0 || p > 65535) return false;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return false;
  ep = tcp::endpoint(addr, static_cast<unsigned short>(p));
  return true;
}

// The spool's asynchronous submit as an awaitable that resumes on the
// coroutine's own executor.
asio::awaitable<std::pair<std::error_code, queue::QueueId>> submit_message(
    queue::Spool& spool, queue::NewMessage msg) {
  auto ex = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<
      const asio::use_awaitable_t<>&,
      void(std::pair<std::error_code, queue::QueueId>)>(
      [&spool, ex](auto handler, queue::NewMessage m) {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        // Counted as outstanding work, so the io_context keeps running
        // while the committer syncs.
        auto work = asio::prefer(ex, asio::execution::outstanding_work.tracked);
        spool.submit_async(
            std::move(m), [h, work](std::error_code ec, queue::QueueId id) {
              // The committer thread: hand the result back to `ex`.
              asio::dispatch(work, [h, ec, id = std::move(id)]() mutable {
                std::move (*h)(std::make_pair(ec, std::move(id)));
              });
            });
      },
      asio::use_awaitable, std::move(msg));
}

// One POP3 connection: a reply reader with a per-reply timeout over a
// LinkTransport (plain, then TLS after STLS).
class Client {
 public:
  Client(asio::any_io_executor ex, std::chrono::milliseconds timeout)
      : socket_(ex), timer_(ex), timeout_(timeout) {}

  asio::awaitable<std::error_code> connect(const tcp::endpoint& ep) {
    arm();
    auto [e] =
        co_await socket_.async_connect(ep, asio::as_tuple(asio::use_awaitable));
    timer_.cancel();
    if (*expired_) co_return pop3_fetch_errc::timeout;
    if (e) {
      detail_ = e.message();
      co_return pop3_fetch_errc::connect_failed;
    }
    transport_ = make_link_transport(socket_);
    co_return std::error_code{};
  }

  // Reads one line without its CRLF (a bare LF is accepted too).
  asio::awaitable<std::error_code> read_line(std::string& line) {
    for (;;) {
      size_t eol = buf_.find('\n', scanned_);
      if (eol != std::string::npos) {
        size_t end = eol > 0 && buf_[eol - 1] == '\r' ? eol - 1 : eol;
        line.assign(buf_, 0, end);
        buf_.erase(0, eol + 1);
        scanned_ = 0;
        co_return std::error_code{};
      }
      scanned_ = buf_.size();
      if (buf_.size() > kMaxLine) {
        detail_ = "reply line longer than " + std::to_string(kMaxLine);
        co_return pop3_fetch_errc::protocol;
      }
      char tmp[16384];
      std::error_code ec;
      arm();
      size_t n = co_await transport_->read_some(asio::buffer(tmp), ec);
      timer_.cancel();
      if (*expired_) co_return pop3_fetch_errc::timeout;
      if (n == 0 || ec) {
        detail_ = ec ? ec.message() : "end of stream";
        co_return pop3_fetch_errc::dropped;
      }
      buf_.append(tmp, n);
    }
  }

  // Reads a status line; `ok` tells +OK from -ERR.
  asio::awaitable<std::error_code> status(bool& ok, std::string& line) {
    if (auto ec = co_await read_line(line)) co_return ec;
    if (line.rfind("+OK", 0) == 0) {
      ok = true;
    } else if (line.rfind("-ERR", 0) == 0) {
      ok = false;
    } else {
      detail_ = "not +OK or -ERR: " + log::quote(line.substr(0, 80));
      co_return pop3_fetch_errc::protocol;
    }
    co_return std::error_code{};
  }

  asio::awaitable<std::error_code> send(std::string_view cmd) {
    std::string wire = std::string(cmd) + "\r\n";
    std::error_code ec;
    arm();
    co_await transport_->write(asio::buffer(wire), ec);
    timer_.cancel();
    if (*expired_) co_return pop3_fetch_errc::timeout;
    if (ec) {
      detail_ = ec.message();
      co_return pop3_fetch_errc::dropped;
    }
    co_return std::error_code{};
  }

  // Sends `cmd` and reads its status line.
  asio::awaitable<std::error_code> command(std::string_view cmd, bool& ok,
                                           std::string& line) {
    if (auto ec = co_await send(cmd)) co_return ec;
    co_return co_await status(ok, line);
  }

  // The body of a multi-line reply after its +OK line, unstuffed, each
  // line ending in CRLF.  Stops reading (protocol error) past `limit`.
  asio::awaitable<std::error_code> multiline(std::string& out, uint64_t limit) {
    out.clear();
    std::string line;
    for (;;) {
      if (auto ec = co_await read_line(line)) co_return ec;
      if (line == ".") co_return std::error_code{};
      std::string_view l = pop3_unstuff(line);
      out.append(l.data(), l.size());
      out += "\r\n";
      if (out.size() > limit) {
        detail_ = "multi-line reply longer than " + std::to_string(limit);
        co_return pop3_fetch_errc::protocol;
      }
    }
  }

  asio::awaitable<std::error_code> start_tls(asio::ssl::context& ctx) {
    // Bytes the server sent before our handshake would be a protocol
    // violation (and an injection vector, RFC 2595 / CVE-2011-0411 kin).
    if (!buf_.empty()) {
      detail_ = "data after the STLS reply";
      co_return pop3_fetch_errc::protocol;
    }
    std::error_code ec;
    arm();
    co_await transport_->start_tls(ctx, false, ec);
    timer_.cancel();
    if (*expired_) co_return pop3_fetch_errc::timeout;
    if (ec) {
      detail_ = ec.message();
      co_return pop3_fetch_errc::tls_failed;
    }
    co_return std::error_code{};
  }

  void close() {
    if (transport_) transport_->close();
    boost::system::error_code ignored;
    socket_.close(ignored);
  }
  uint64_t bytes_in() const { return transport_ ? transport_->bytes_in() : 0; }
  uint64_t bytes_out() const {
    return transport_ ? transport_->bytes_out() : 0;
  }
  const std::string& detail() const { return detail_; }

 private:
  // Starts the watchdog for one operation: on expiry the socket is closed,
  // which fails the pending operation; `expired_` tells a timeout from a
  // drop.  The flag is shared so a late handler never touches a dead
  // Client.
  void arm() {
    expired_ = std::make_shared<bool>(false);
    timer_.expires_after(timeout_);
    timer_.async_wait(
        [flag = expired_, sock = &socket_](boost::system::error_code e) {
          if (e) return;  // cancelled: the operation finished in time
          *flag = true;
          boost::system::error_code ignored;
          sock->close(ignored);
        });
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<bool> expired_ = std::make_shared<bool>(false);
  std::unique_ptr<LinkTransport> transport_;
  std::string buf_;
  size_t scanned_ = 0;
  std::string detail_;
};

// The built-in client context: TLS 1.2 or later and no certificate check
// (see the header: a provider's POP3 host has no CA or pin configured).
std::unique_ptr<asio::ssl::context> default_tls() {
  auto ctx =
      std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_verify_mode(asio::ssl::verify_none);
  return ctx;
}

// Is `address` for us to store?  Its domain must route here ("local") or
// to another peer; the smarthost route and the peer we fetch from would
// send it straight back to the provider.
bool ours(const FetchContext& ctx, const PeerConfig& peer,
          std::string_view address) {
  PathParse p = parse_path("<" + std::string(address) + ">");
  if (!p.ok || p.box.domain.empty()) return false;
  std::string domain = lower_ascii(p.box.domain);
  if (ctx.policy && ctx.policy->is_local_domain(domain)) return true;
  if (!ctx.router) return false;
  std::string route = ctx.router->route_for(domain);
  return !route.empty() && route != kSmarthostRoute && route != peer.name;
}

}  // namespace

const std::error_category& pop3_fetch_category() {
  static const Pop3FetchCategory cat;
  return cat;
}

std::error_code make_error_code(pop3_fetch_errc e) {
  return {static_cast<int>(e), pop3_fetch_category()};
}

std::string_view pop3_unstuff(std::string_view line) {
  if (line.size() >= 2 && line[0] == '.' && line[1] == '.') {
    line.remove_prefix(1);
  }
  return line;
}

std::vector<std::string> envelope_recipients(
    std::string_view message, const std::vector<std::string>& header_names) {
  auto fields = header_fields(message);
  std::vector<std::string> out;
  for (const auto& name : header_names) {
    bool found = false;
    for (const auto& [fname, value] : fields) {
      if (!iequals(fname, name)) continue;
      found = true;
      for (const auto& item : split_list(strip_comments(value))) {
        std::string a = normalise_address(item);
        if (a.empty()) continue;
        bool dup = std::any_of(out.begin(), out.end(), [&](const auto& o) {
          return lower_ascii(o) == lower_ascii(a);
        });
        if (!dup) out.push_back(std::move(a));
      }
    }
    if (found) break;  // the first header name present decides
  }
  return out;
}

std::string return_path(std::string_view message) {
  for (const auto& [name, value] : header_fields(message)) {
    if (!iequals(name, "return-path")) continue;
    return normalise_address(strip_comments(value));
  }
  return "";
}

namespace {

// The POP3 session of fetch_pop3(), up to QUIT; fills `res`.
asio::awaitable<void> run_session(asio::any_io_executor ex,
                                  const PeerConfig& peer, FetchContext& ctx,
                                  Pop3FetchResult& res) {
  const std::string& who = peer.name;
  auto logf = [&ctx](std::string_view id, std::string_view text) {
    if (ctx.log) {
      ctx.log(id, text);
    } else {
      log::line(id, text);
    }
  };
  Client c(ex, ctx.timeout);
  // Ends the run with an error: one log line for the session, then the
  // connection is dropped without QUIT so nothing is removed.
  auto fail = [&](std::error_code ec, std::string text) {
    res.ec = ec;
    res.error = "peer " + who + ": pop3 " + peer.pop3_server + ": " + text;
    res.bytes_in = c.bytes_in();
    res.bytes_out = c.bytes_out();
    c.close();
    logf(who, "pop3 server=" + log::quote(peer.pop3_server) +
                  " result=failed error=" + log::quote(text) +
                  " stored=" + std::to_string(res.stored) +
                  " already=" + std::to_string(res.already));
  };
  auto failed_io = [&](std::error_code ec, std::string_view during) {
    std::string text = std::string(during) + ": " + ec.message();
    if (!c.detail().empty()) text += " (" + c.detail() + ")";
    fail(ec, text);
  };

  // Configuration.
  tcp::endpoint ep;
  if (!ctx.spool) {
    fail(pop3_fetch_errc::bad_config, "no spool");
    co_return;
  }
  if (!parse_server(peer.pop3_server, ep)) {
    fail(pop3_fetch_errc::bad_config,
         "pop3_server must be IP:PORT or [IPv6]:PORT, got " +
             log::quote(peer.pop3_server));
    co_return;
  }
  std::string password;
  {
    std::ifstream in(peer.pop3_password_file, std::ios::binary);
    if (!in || !std::getline(in, password)) {
      fail(pop3_fetch_errc::bad_config,
           "cannot read pop3_password_file " +
               log::quote(peer.pop3_password_file));
      co_return;
    }
    if (!password.empty() && password.back() == '\r') password.pop_back();
  }

  // Greeting and STLS.
  bool ok = false;
  std::string line;
  if (auto ec = co_await c.connect(ep)) {
    failed_io(ec, "connect");
    co_return;
  }
  if (auto ec = co_await c.status(ok, line)) {
    failed_io(ec, "greeting");
    co_return;
  }
  if (!ok) {
    fail(pop3_fetch_errc::server_error, "greeting: " + line);
    co_return;
  }
  std::unique_ptr<asio::ssl::context> own_tls;
  if (peer.pop3_stls != PeerConfig::Tls::no) {
    if (auto ec = co_await c.command("STLS", ok, line)) {
      failed_io(ec, "STLS");
      co_return;
    }
    if (ok) {
      asio::ssl::context* tls = ctx.tls;
      if (!tls) {
        own_tls = default_tls();
        tls = own_tls.get();
      }
      if (auto ec = co_await c.start_tls(*tls)) {
        failed_io(ec, "TLS handshake");
        co_return;
      }
      res.tls = true;
    } else if (peer.pop3_stls == PeerConfig::Tls::required) {
      fail(pop3_fetch_errc::tls_refused,
           "STLS refused (" + line + "); not logging in without TLS");
      co_return;
    } else {
      logf(who, "pop3 tls=no reason=" + log::quote(line));
    }
  }

  // Login.
  if (auto ec = co_await c.command("USER " + peer.pop3_user, ok, line)) {
    failed_io(ec, "USER");
    co_return;
  }
  if (ok) {
    if (auto ec = co_await c.command("PASS " + password, ok, line)) {
      failed_io(ec, "PASS");
      co_return;
    }
    if (!ok) {
      fail(pop3_fetch_errc::auth_failed, "PASS refused: " + line);
      co_return;
    }
  } else {
    fail(pop3_fetch_errc::auth_failed, "USER refused: " + line);
    co_return;
  }

  // What the mailbox holds: UIDL for identity, LIST for sizes.
  std::string listing;
  if (auto ec = co_await c.command("UIDL", ok, line)) {
    failed_io(ec, "UIDL");
    co_return;
  }
  if (!ok) {
    fail(pop3_fetch_errc::no_uidl,
         "UIDL refused (" + line + "); exactly-once collection needs it");
    co_return;
  }
  if (auto ec = co_await c.multiline(listing, kMaxLine * 16)) {
    failed_io(ec, "UIDL");
    co_return;
  }
  std::vector<std::pair<unsigned long, std::string>> uids;
  for (size_t pos = 0; pos < listing.size();) {
    size_t eol = listing.find("\r\n", pos);
    std::string_view l(listing.data() + pos, eol - pos);
    pos = eol + 2;
    size_t sp = l.find(' ');
    if (sp == std::string_view::npos || sp == 0) continue;
    std::string num(l.substr(0, sp));
    std::string_view uid = trim(l.substr(sp + 1));
    if (uid.empty() || uid.size() > 70 || num.size() > 9 ||
        !std::all_of(num.begin(), num.end(),
                     [](char ch) { return ch >= '0' && ch <= '9'; })) {
      fail(pop3_fetch_errc::protocol,
           "bad UIDL line " + log::quote(std::string(l)));
      co_return;
    }
    uids.emplace_back(std::stoul(num), std::string(uid));
  }
  std::map<unsigned long, uint64_t> sizes;
  if (auto ec = co_await c.command("LIST", ok, line)) {
    failed_io(ec, "LIST");
    co_return;
  }
  if (!ok) {
    fail(pop3_fetch_errc::server_error, "LIST refused: " + line);
    co_return;
  }
  if (auto ec = co_await c.multiline(listing, kMaxLine * 16)) {
    failed_io(ec, "LIST");
    co_return;
  }
  for (size_t pos = 0; pos < listing.size();) {
    size_t eol = listing.find("\r\n", pos);
    std::string l = listing.substr(pos, eol - pos);
    pos = eol + 2;
    unsigned long num = 0;
    unsigned long long size = 0;
    if (std::sscanf(l.c_str(), "%lu %llu", &num, &size) == 2) {
      sizes[num] = size;
    }
  }
  res.listed = uids.size();

  // Each message: skip what an earlier run stored, else RETR and store;
  // DELE only once it is durable here.
  for (const auto& [num, uid] : uids) {
    const std::string n = std::to_string(num);
    const std::string tid = "pop3:" + peer.name + ":" + uid;
    const std::string tag =
        "peer=" + peer.name + " pop3_uidl=" + log::quote(uid);
    queue::QueueId earlier;
    std::error_code lec = ctx.spool->lookup_received(peer.name, tid, earlier);
    if (lec && lec != queue::spool_errc::not_found) {
      fail(lec, "spool: " + lec.message());
      co_return;
    }
    if (!lec) {
      res.already++;
      logf(earlier, tag + " result=already");
    } else {
      auto sz = sizes.find(num);
      if (sz != sizes.end() && sz->second > ctx.max_message_size) {
        res.skipped++;
        logf("NOQUEUE", tag + " size=" + std::to_string(sz->second) +
                            " result=skipped reason=too_big");
        continue;
      }

      std::string body;
      if (auto ec = co_await c.command("RETR " + n, ok, line)) {
        failed_io(ec, "RETR " + n);
        co_return;
      }
      if (!ok) {
        // Another client deleted it meanwhile, or the server cannot read
        // it: leave it, the next run tries again.
        res.skipped++;
        logf("NOQUEUE", tag + " result=skipped reason=" + log::quote(line));
        continue;
      }
      // The listed size is in CRLF octets before unstuffing; our limit
      // plus some slack stops a server that lied about it.
      if (auto ec = co_await c.multiline(
              body, ctx.max_message_size + ctx.max_message_size / 8 + 1024)) {
        failed_io(ec, "RETR " + n);
        co_return;
      }

      // Envelope.
      queue::NewMessage m;
      m.sender = return_path(body);
      size_t named = 0;
      for (auto& r : envelope_recipients(body, peer.pop3_envelope_headers)) {
        named++;
        if (!ours(ctx, peer, r)) {
          res.skipped_recipients++;
          logf("NOQUEUE",
               tag + " to=<" + r + "> result=skipped" + " reason=not_ours");
          continue;
        }
        m.recipients.push_back({r, "", 0, std::string(kPickupRoute)});
      }
      if (m.recipients.empty()) {
        res.to_postmaster++;
        logf("NOQUEUE", tag + " named=" + std::to_string(named) + " to=<" +
                            ctx.postmaster + "> reason=no_usable_recipient");
        m.recipients.push_back(
            {ctx.postmaster, "", 0, std::string(kPickupRoute)});
      }
      const size_t nrcpt = m.recipients.size();
      m.body = std::move(body);
      m.received_transfer_id = tid;
      m.received_from_peer = peer.name;

      // Store: durable before DELE.
      auto [sec, qid] = co_await submit_message(*ctx.spool, std::move(m));
      if (sec == queue::spool_errc::bad_state && !qid.empty()) {
        // Stored by a run that overlapped ours: it is here already.
        res.already++;
        logf(qid, tag + " result=already");
      } else if (sec) {
        fail(sec, "storing " + tag + ": " + sec.message());
        co_return;
      } else {
        res.stored++;
        logf(qid,
             tag + " recipients=" + std::to_string(nrcpt) + " result=stored");
      }
    }

    if (auto ec = co_await c.command("DELE " + n, ok, line)) {
      failed_io(ec, "DELE " + n);
      co_return;
    }
    if (ok) {
      res.deleted++;
    } else {
      // Stored but not deleted: the UIDL record keeps the next run from
      // storing it twice.
      logf("NOQUEUE", tag + " result=not_deleted reason=" + log::quote(line));
    }
  }

  // QUIT: only now does the server remove the DELE'd messages.
  if (auto ec = co_await c.command("QUIT", ok, line)) {
    failed_io(ec, "QUIT");
    co_return;
  }
  if (!ok) {
    fail(pop3_fetch_errc::server_error, "QUIT refused: " + line);
    co_return;
  }
  res.quit_ok = true;
  res.bytes_in = c.bytes_in();
  res.bytes_out = c.bytes_out();
  c.close();

  logf(who, "pop3 server=" + log::quote(peer.pop3_server) +
                " tls=" + (res.tls ? "yes" : "no") +
                " listed=" + std::to_string(res.listed) +
                " stored=" + std::to_string(res.stored) +
                " already=" + std::to_string(res.already) +
                " deleted=" + std::to_string(res.deleted) +
                " skipped=" + std::to_string(res.skipped) +
                " bytes_in=" + std::to_string(res.bytes_in) + " result=ok");
}

}  // namespace

asio::awaitable<Pop3FetchResult> fetch_pop3(asio::any_io_executor ex,
                                            const PeerConfig& peer,
                                            FetchContext& ctx) {
  Pop3FetchResult res;
  co_await run_session(ex, peer, ctx, res);

  // Deliver what was stored, also when the session failed later on (and
  // anything an earlier run or ferry-sendmail left on the pickup route).
  if (ctx.run_pickup && ctx.policy && ctx.spool) {
    PickupOptions po;
    po.mail_root = ctx.mail_root;
    po.on_failed = ctx.on_failed;
    auto ec = process_pickup(*ctx.spool, *ctx.policy, po, res.pickup);
    if (ec && !res.ec) {
      res.ec = ec;
      res.error = "peer " + peer.name + ": pickup after pop3: " + ec.message();
    }
  }
  co_return res;
}

}  // namespace ferry::gw
