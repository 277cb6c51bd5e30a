#include "gateway/smtp_session.h"

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <cstdio>
#include <ctime>

#include "gateway/log.h"
#include "gateway/maildir.h"

namespace ferry::gw {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
constexpr auto kTuple = asio::as_tuple(use_awaitable);

namespace {

// Longest command line we read (RFC 5321 allows 512; AUTH PLAIN initial
// responses and long parameter lists need more, RFC 4954 4 says 12288).
constexpr size_t kMaxCommandLine = 16384;
// Refused commands before we give up on a client.
constexpr unsigned kMaxErrors = 20;
constexpr unsigned kMaxAuthFailures = 3;
constexpr size_t kReadChunk = 64 * 1024;

// RFC 5322 date-time in UTC.
std::string rfc5322_date() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed",
                                      "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr",
                                        "May", "Jun", "Jul", "Aug",
                                        "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                kDays[tm.tm_wday], tm.tm_mday, kMonths[tm.tm_mon],
                tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

// The HELO name as it may appear in a header: printable ASCII, at most
// 255 octets; anything else becomes '?' so a client cannot fold, break or
// smuggle header lines through its greeting.
std::string printable(std::string_view s) {
  std::string out(s.substr(0, 255));
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= ' ' || u >= 0x7f) c = '?';
  }
  return out;
}

bool has_non_ascii(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return true;
  }
  return false;
}

// Whether the header block of `msg` (from `from` to the first empty line)
// holds a field named `name` (case-insensitive, with the colon).
bool has_header(std::string_view msg, std::string_view name) {
  size_t pos = 0;
  while (pos < msg.size()) {
    size_t eol = msg.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = msg.size();
    std::string_view line = msg.substr(pos, eol - pos);
    if (line.empty()) return false;
    if (line.size() >= name.size()) {
      bool same = true;
      for (size_t i = 0; i < name.size() && same; ++i) {
        same = std::tolower(static_cast<unsigned char>(line[i])) ==
               std::tolower(static_cast<unsigned char>(name[i]));
      }
      if (same) return true;
    }
    pos = eol + 2;
  }
  return false;
}

// Waiting for another thread: the coroutine parks on a timer that never
// expires and the other thread posts its cancellation.  The pending wait
// counts as work on the io_context, so a graceful stop waits for it.
// (A timer rather than async_initiate with a capturing lambda: g++ 12
// miscompiles lambda temporaries inside co_await expressions.)
struct Rendezvous {
  explicit Rendezvous(const asio::any_io_executor& ex)
      : executor(ex), timer(ex, asio::steady_timer::time_point::max()) {}
  // Called from the other thread when the result is in place.
  void signal() {
    asio::post(executor, [this] { timer.cancel(); });
  }
  awaitable<void> wait() { co_await timer.async_wait(kTuple); }
  asio::any_io_executor executor;
  asio::steady_timer timer;
};

// Runs `fn` (returning std::error_code) on `pool`; resumes on our own
// executor with its result.
template <typename Fn>
awaitable<std::error_code> run_on(asio::thread_pool& pool, Fn fn) {
  Rendezvous r(co_await asio::this_coro::executor);
  std::error_code result;
  asio::post(pool, [&r, &result, &fn] {
    result = fn();
    r.signal();
  });
  co_await r.wait();
  co_return result;
}

// Spool::submit_async as an awaitable (its callback runs on the spool's
// committer thread).
awaitable<std::pair<std::error_code, queue::QueueId>> submit(
    queue::Spool& spool, queue::NewMessage msg) {
  Rendezvous r(co_await asio::this_coro::executor);
  std::pair<std::error_code, queue::QueueId> result;
  spool.submit_async(std::move(msg),
                     [&r, &result](std::error_code ec, queue::QueueId id) {
                       result = {ec, std::move(id)};
                       r.signal();
                     });
  co_await r.wait();
  co_return result;
}

}  // namespace

std::string make_message_id() {
  // The spool's own generator: the id named in the Received: header, the
  // Maildir file names and "queued as" is the id the spool record gets.
  return queue::new_queue_id();
}

// ---- life cycle ------------------------------------------------------------

SmtpSession::SmtpSession(SmtpContext& ctx, const ListenerConfig& listener,
                         tcp::socket socket, std::string id)
    : ctx_(ctx),
      listener_(listener),
      socket_(std::move(socket)),
      id_(std::move(id)),
      timer_(socket_.get_executor()) {
  boost::system::error_code ec;
  // Replies are already gathered into one write per batch (see fill()), so
  // Nagle's algorithm only adds a round trip.
  socket_.set_option(tcp::no_delay(true), ec);
  auto ep = socket_.remote_endpoint(ec);
  if (!ec) {
    auto addr = ep.address();
    if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
      addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
    }
    peer_ip_ = addr.to_string();
    peer_port_ = ep.port();
  }
}

SmtpSession::~SmtpSession() = default;

void SmtpSession::stop() {
  stopping_ = true;
  boost::system::error_code ec;
  socket_.cancel(ec);
}

awaitable<void> SmtpSession::run(bool refuse_busy) {
  auto self = shared_from_this();
  log::line(id_, "connect from=[" + peer_ip_ +
                     "]:" + std::to_string(peer_port_) +
                     " listener=" + log::quote(listener_.name));
  asio::co_spawn(socket_.get_executor(), watchdog(), asio::detached);

  if (refuse_busy) {
    reply(421, "4.7.0", ctx_.hostname + " Too many connections, try later");
    co_await flush();
  } else if (co_await greet()) {
    while (!closing_) {
      if (stopping_) {
        reply(421, "4.3.2", ctx_.hostname + " Service shutting down");
        break;
      }
      // One command line, reading more as needed.
      auto r = smtp::next_line(pending(), kMaxCommandLine);
      if (r.status == smtp::LineStatus::need_more) {
        if (!co_await fill(ctx_.cfg->smtp.command_timeout)) break;
        continue;
      }
      if (r.status == smtp::LineStatus::too_long && r.consumed == 0) {
        // Drop what we have and skip to the end of the line.
        in_.clear();
        pos_ = 0;
        bool found = false;
        while (!found) {
          if (!co_await fill(ctx_.cfg->smtp.command_timeout)) {
            closing_ = true;
            break;
          }
          size_t lf = in_.find('\n');
          if (lf != std::string::npos) {
            consume(lf + 1);
            found = true;
          } else {
            in_.clear();
            pos_ = 0;
          }
        }
        if (!found) break;
        current_cmd_ = "?";
        reply(500, "5.5.6", "Line too long");
        ++errors_;
        continue;
      }
      std::string line(r.line);
      consume(r.consumed);
      ++commands_;
      if (r.status == smtp::LineStatus::too_long) {
        current_cmd_ = "?";
        reply(500, "5.5.6", "Line too long");
        ++errors_;
        continue;
      }
      if (r.status == smtp::LineStatus::bare_lf) {
        current_cmd_ = "?";
        reply(500, "5.5.2", "Syntax error: command lines end with CRLF");
        ++errors_;
        continue;
      }
      auto pc = smtp::parse_command(line);
      current_cmd_ = pc.cmd.name;
      if (!co_await handle(pc)) break;
      if (errors_ >= kMaxErrors) {
        reply(421, "4.7.0", ctx_.hostname + " Too many errors");
        break;
      }
    }
  }

  // Tell the client what we have queued (421, 221) and close.
  if (!out_.empty()) {
    set_deadline(std::chrono::seconds(10));
    co_await flush();
  }
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  alive_ = false;
  timer_.cancel();
  log::line(id_, "disconnect commands=" + std::to_string(commands_) +
                     " messages=" + std::to_string(messages_));
}

// The watchdog enforces the current read/write deadline by cancelling the
// socket's operations; the reader sees operation_aborted with timed_out_.
awaitable<void> SmtpSession::watchdog() {
  auto self = shared_from_this();
  while (alive_) {
    timer_.expires_at(deadline_);
    co_await timer_.async_wait(kTuple);
    if (!alive_) break;
    if (deadline_ <= Clock::now()) {
      timed_out_ = true;
      deadline_ = Clock::time_point::max();
      boost::system::error_code ec;
      socket_.cancel(ec);
    }
  }
}

void SmtpSession::set_deadline(Clock::duration d) {
  deadline_ = Clock::now() + d;
  if (deadline_ < timer_.expiry()) timer_.cancel();  // re-arm sooner
}

void SmtpSession::clear_deadline() { deadline_ = Clock::time_point::max(); }

void SmtpSession::consume(size_t n) {
  pos_ += n;
  if (pos_ == in_.size()) {
    in_.clear();
    pos_ = 0;
  } else if (pos_ > 64 * 1024 && pos_ > in_.size() / 2) {
    in_.erase(0, pos_);
    pos_ = 0;
  }
}

// ---- I/O
// ---------------------------------------------------------------------

awaitable<bool> SmtpSession::flush() {
  if (out_.empty()) co_return true;
  std::string data;
  data.swap(out_);
  if (deadline_ == Clock::time_point::max()) {
    set_deadline(ctx_.cfg->smtp.command_timeout);
  }
  boost::system::error_code ec;
  if (tls_) {
    std::tie(ec, std::ignore) =
        co_await asio::async_write(*tls_, asio::buffer(data), kTuple);
  } else {
    std::tie(ec, std::ignore) =
        co_await asio::async_write(socket_, asio::buffer(data), kTuple);
  }
  clear_deadline();
  if (ec) {
    if (!timed_out_ && !stopping_) {
      log::line(id_, "lost connection after " + current_cmd_ +
                         " error=" + log::quote(ec.message()));
    }
    closing_ = true;
    co_return false;
  }
  co_return true;
}

// Flushes pending replies, then reads more bytes.  On a timeout the client
// hears 421 4.4.2; on shutdown 421 4.3.2.  Returns false when the session
// must end (nothing more to read).
awaitable<bool> SmtpSession::fill(std::chrono::seconds timeout) {
  if (!co_await flush()) co_return false;
  if (stopping_) {
    reply(421, "4.3.2", ctx_.hostname + " Service shutting down");
    closing_ = true;
    co_return false;
  }
  size_t old = in_.size();
  in_.resize(old + kReadChunk);
  timed_out_ = false;
  set_deadline(timeout);
  boost::system::error_code ec;
  size_t n = 0;
  auto buf = asio::buffer(in_.data() + old, kReadChunk);
  if (tls_) {
    std::tie(ec, n) = co_await tls_->async_read_some(buf, kTuple);
  } else {
    std::tie(ec, n) = co_await socket_.async_read_some(buf, kTuple);
  }
  clear_deadline();
  in_.resize(old + n);
  if (n > 0) co_return true;

  closing_ = true;
  if (timed_out_) {
    log::line(id_, "timeout after " + current_cmd_);
    reply(421, "4.4.2", ctx_.hostname + " Error: timeout exceeded");
  } else if (stopping_) {
    reply(421, "4.3.2", ctx_.hostname + " Service shutting down");
  } else if (ec == asio::error::eof ||
             ec == asio::ssl::error::stream_truncated) {
    if (current_cmd_ != "QUIT") {
      log::line(id_, "lost connection after " + current_cmd_);
    }
  } else {
    log::line(id_, "lost connection after " + current_cmd_ +
                       " error=" + log::quote(ec.message()));
  }
  co_return false;
}

void SmtpSession::reply(int code, std::string_view enhanced,
                        std::string_view text) {
  out_ += smtp::format_reply(code, enhanced, text);
  if (code >= 400) {
    std::string first(text.substr(0, text.find('\n')));
    log::line(id_, "refused code=" + std::to_string(code) +
                       " enhanced=" + std::string(enhanced) +
                       " command=" + log::quote(current_cmd_) +
                       " reason=" + log::quote(first));
  }
}

// ---- greeting
// ----------------------------------------------------------------

// Talk-before-greeting: a client (or a spam engine) that sends before our
// 220 is not speaking SMTP; pipelining does not start before the greeting.
awaitable<bool> SmtpSession::greet() {
  auto pause = ctx_.cfg->smtp.greeting_pause;
  if (pause.count() > 0) {
    set_deadline(pause);
    auto [ec] = co_await socket_.async_wait(tcp::socket::wait_read, kTuple);
    clear_deadline();
    if (stopping_) co_return false;
    if (!timed_out_) {
      closing_ = true;
      if (ec) co_return false;  // gone already
      reply(554, "5.5.0",
            ctx_.hostname + " Error: client sent data before the greeting");
      co_return false;
    }
    timed_out_ = false;
  }
  reply(220, "", ctx_.hostname + " ESMTP ferry");
  co_return true;
}

// ---- commands
// ----------------------------------------------------------------

ClientFacts SmtpSession::facts() const {
  ClientFacts f;
  f.ip = peer_ip_;
  f.mode = listener_.mode;
  f.authenticated = authenticated_;
  f.auth_user = auth_user_;
  f.require_auth = listener_.require_auth;
  return f;
}

bool SmtpSession::auth_allowed() const {
  return ctx_.users != nullptr && (tls_ != nullptr || listener_.trusted_local);
}

void SmtpSession::reset_transaction() { tx_ = Transaction{}; }

awaitable<bool> SmtpSession::handle(const smtp::ParsedCommand& pc) {
  const smtp::Command& c = pc.cmd;
  using smtp::Verb;
  switch (c.verb) {
    case Verb::helo:
      do_helo(c, false);
      break;
    case Verb::ehlo:
      do_helo(c, true);
      break;
    case Verb::mail:
      do_mail(pc);
      break;
    case Verb::rcpt:
      do_rcpt(pc);
      break;
    case Verb::data:
      co_return co_await do_data(c);
    case Verb::bdat:
      co_return co_await do_bdat(c);
    case Verb::rset:
      reset_transaction();
      reply(250, "2.0.0", "Ok");
      break;
    case Verb::noop:
      reply(250, "2.0.0", "Ok");
      break;
    case Verb::vrfy:
      do_vrfy(c);
      break;
    case Verb::expn:
      reply(502, "5.5.1", "EXPN is not available");
      break;
    case Verb::help:
      reply(214, "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY QUIT "
            "STARTTLS AUTH");
      break;
    case Verb::quit:
      reply(221, "2.0.0", ctx_.hostname + " Bye");
      closing_ = true;
      co_return false;
    case Verb::starttls:
      co_return co_await do_starttls(c);
    case Verb::auth:
      co_return co_await do_auth(c);
    case Verb::unknown:
      ++errors_;
      reply(500, "5.5.2", "Error: command not recognized");
      break;
  }
  co_return true;
}

void SmtpSession::do_helo(const smtp::Command& c, bool esmtp) {
  if (c.arg.empty()) {
    ++errors_;
    reply(501, "5.5.4",
          std::string("Syntax: ") + (esmtp ? "EHLO" : "HELO") + " hostname");
    return;
  }
  reset_transaction();
  helo_ = c.arg;
  esmtp_ = esmtp;
  log::line(id_,
            "helo=" + log::quote(helo_) + (esmtp ? " esmtp=yes" : " esmtp=no"));
  if (!esmtp) {
    reply(250, "", ctx_.hostname);
    return;
  }
  std::string text = ctx_.hostname + "\nPIPELINING\nSIZE " +
                     std::to_string(ctx_.cfg->smtp.max_message_size) +
                     "\n8BITMIME\nSMTPUTF8\nDSN\nENHANCEDSTATUSCODES\nCHUNKING";
  if (ctx_.tls && listener_.starttls && !tls_) text += "\nSTARTTLS";
  if (auth_allowed() && !authenticated_) text += "\nAUTH PLAIN LOGIN";
  reply(250, "", text);
}

void SmtpSession::do_mail(const smtp::ParsedCommand& pc) {
  if (helo_.empty()) {
    ++errors_;
    reply(503, "5.5.1", "Error: send HELO/EHLO first");
    return;
  }
  if (tx_.active) {
    ++errors_;
    reply(503, "5.5.1", "Error: nested MAIL command");
    return;
  }
  if (!pc.from_to_ok) {
    ++errors_;
    reply(501, "5.5.4", "Syntax: MAIL FROM:<address>");
    return;
  }
  PathParse from = parse_path(pc.cmd.arg);
  if (!from.ok) {
    ++errors_;
    reply(501, "5.1.7", "Bad sender address syntax: " + from.error);
    return;
  }

  // ESMTP parameters (RFC 1870 SIZE, 6152 BODY, 6531 SMTPUTF8, 3461 RET
  // and ENVID, 4954 AUTH).
  smtp::Params params;
  std::string perr;
  if (!smtp::parse_params(from.rest, params, perr)) {
    ++errors_;
    reply(501, "5.5.4", "Bad MAIL parameters: " + perr);
    return;
  }
  if (!params.empty() && !esmtp_) {
    reply(555, "5.5.4", "MAIL parameters need EHLO");
    return;
  }
  Transaction tx;
  std::set<std::string> seen;
  for (const auto& [key, value] : params) {
    if (!seen.insert(key).second) {
      reply(501, "5.5.4", "Duplicate MAIL parameter " + key);
      return;
    }
    if (key == "SIZE") {
      if (value.empty() || value.size() > 18 ||
          value.find_first_not_of("0123456789") != std::string::npos) {
        reply(501, "5.5.4", "Bad SIZE value");
        return;
      }
      tx.declared_size = std::stoull(value);
    } else if (key == "BODY") {
      std::string v = lower_ascii(value);
      if (v != "7bit" && v != "8bitmime") {
        reply(555, "5.5.4", "Unsupported BODY type " + value);
        return;
      }
    } else if (key == "SMTPUTF8") {
      if (!value.empty()) {
        reply(501, "5.5.4", "SMTPUTF8 takes no value");
        return;
      }
      tx.smtputf8 = true;
    } else if (key == "RET") {
      std::string v = lower_ascii(value);
      if (v == "full") {
        tx.ret = queue::Ret::full;
      } else if (v == "hdrs") {
        tx.ret = queue::Ret::hdrs;
      } else {
        reply(501, "5.5.4", "Bad RET value");
        return;
      }
    } else if (key == "ENVID") {
      if (value.empty() || value.size() > 100 || !smtp::xtext_valid(value)) {
        reply(501, "5.5.4", "Bad ENVID value");
        return;
      }
      tx.envid = value;  // kept as xtext, as it travels onward
    } else if (key == "AUTH") {
      // RFC 4954 5: accepted; we do not trust another server's claim.
    } else {
      reply(555, "5.5.4", "Unsupported MAIL parameter " + key);
      return;
    }
  }
  if (!tx.smtputf8 &&
      (has_non_ascii(from.box.local) || has_non_ascii(from.box.domain))) {
    reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8");
    return;
  }

  Reply r = ctx_.policy->check_sender(facts(), from, tx.declared_size);
  std::string addr = from.null_path ? "" : from.box.str();
  if (r.code >= 400) {
    reply(r);
    log::line(id_, "from=<" + addr + "> result=refused");
    return;
  }
  tx.active = true;
  tx.sender = addr;
  tx.from = std::move(from);
  tx_ = std::move(tx);
  log::line(
      id_, "from=<" + addr + ">" +
               (tx_.declared_size ? " size=" + std::to_string(tx_.declared_size)
                                  : std::string()));
  reply(r);
}

void SmtpSession::do_rcpt(const smtp::ParsedCommand& pc) {
  if (!tx_.active) {
    ++errors_;
    reply(503, "5.5.1", "Error: need MAIL command");
    return;
  }
  if (!pc.from_to_ok) {
    ++errors_;
    reply(501, "5.5.4", "Syntax: RCPT TO:<address>");
    return;
  }
  if (tx_.accepted >= ctx_.cfg->smtp.max_recipients) {
    reply(452, "4.5.3", "Error: too many recipients");
    return;
  }
  PathParse to = parse_path(pc.cmd.arg);
  if (!to.ok || to.null_path) {
    ++errors_;
    reply(501, "5.1.3",
          "Bad recipient address syntax" +
              (to.error.empty() ? std::string() : ": " + to.error));
    return;
  }
  smtp::Params params;
  std::string perr;
  if (!smtp::parse_params(to.rest, params, perr)) {
    ++errors_;
    reply(501, "5.5.4", "Bad RCPT parameters: " + perr);
    return;
  }
  if (!params.empty() && !esmtp_) {
    reply(555, "5.5.4", "RCPT parameters need EHLO");
    return;
  }
  std::string orcpt;
  uint8_t notify = 0;
  std::set<std::string> seen;
  for (const auto& [key, value] : params) {
    if (!seen.insert(key).second) {
      reply(501, "5.5.4", "Duplicate RCPT parameter " + key);
      return;
    }
    if (key == "NOTIFY") {
      auto n = smtp::parse_notify(value);
      if (!n) {
        reply(501, "5.5.4", "Bad NOTIFY value");
        return;
      }
      notify = *n;
    } else if (key == "ORCPT") {
      size_t semi = value.find(';');
      if (semi == std::string::npos || semi == 0 || value.size() > 500 ||
          !smtp::xtext_valid(value.substr(semi + 1))) {
        reply(501, "5.5.4", "Bad ORCPT value");
        return;
      }
      orcpt = value;  // "addr-type;xtext" as it travels onward
    } else {
      reply(555, "5.5.4", "Unsupported RCPT parameter " + key);
      return;
    }
  }
  if (!tx_.smtputf8 &&
      (has_non_ascii(to.box.local) || has_non_ascii(to.box.domain))) {
    reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8");
    return;
  }

  RcptDecision d = ctx_.policy->check_rcpt(facts(), tx_.from, to);
  std::string addr = to.box.str();
  if (!d.accepted) {
    log::line(id_, "to=<" + addr + "> result=refused");
    reply(d.reply);
    return;
  }
  for (auto& u : d.local_users) {
    bool dup = false;
    for (const auto& have : tx_.local_users) dup = dup || have == u;
    if (!dup) tx_.local_users.push_back(u);
  }
  for (auto& a : d.remote) {
    queue::NewRecipient nr;
    nr.address = a;
    nr.orcpt = orcpt;
    nr.notify = notify;
    nr.route = d.route.empty() ? "smarthost" : d.route;
    tx_.remote.push_back(std::move(nr));
  }
  if (tx_.accepted++ == 0) tx_.first_rcpt = addr;
  log::line(id_, "to=<" + addr +
                     "> local=" + std::to_string(d.local_users.size()) +
                     " remote=" + std::to_string(d.remote.size()));
  reply(d.reply);
}

void SmtpSession::do_vrfy(const smtp::Command& c) {
  if (!ctx_.cfg->smtp.vrfy || ctx_.users == nullptr) {
    reply(252, "2.0.0",
          "Cannot VRFY user, but will accept message and attempt delivery");
    return;
  }
  PathParse p = parse_path(c.arg);
  std::string user = p.ok ? p.box.local : c.arg;
  if (!p.ok && c.arg.find('@') != std::string::npos) {
    reply(501, "5.1.3", "Bad address syntax");
    return;
  }
  if (p.ok && !p.box.domain.empty() &&
      !ctx_.policy->is_local_domain(lower_ascii(p.box.domain))) {
    reply(252, "2.0.0", "Not a local address; will attempt delivery");
    return;
  }
  if (!ctx_.users->expand(user).empty()) {
    reply(250, "2.0.0", "<" + (p.ok ? p.box.str() : user) + ">");
  } else {
    reply(550, "5.1.1", "User unknown");
  }
}

// ---- message bodies
// ----------------------------------------------------------

std::string SmtpSession::received_header() const {
  // "with" keyword: RFC 3848 (ESMTPS/ESMTPA/ESMTPSA), RFC 6531 UTF8SMTP.
  std::string with = tx_.smtputf8 ? "UTF8SMTP" : (esmtp_ ? "ESMTP" : "SMTP");
  if (tls_ || authenticated_) {
    if (!tx_.smtputf8 && !esmtp_) with = "ESMTP";
    if (tls_) with += "S";
    if (authenticated_) with += "A";
  }
  std::string h =
      "Received: from " + printable(helo_) + " ([" + peer_ip_ + "])\r\n";
  h += "\tby " + ctx_.hostname + " (ferry)";
  if (tls_) {
    const SSL* ssl = tls_->native_handle();
    h += std::string(" (using ") + SSL_get_version(ssl) + " with cipher " +
         SSL_get_cipher_name(ssl) + ")";
  }
  h += "\r\n\twith " + with + " id " + tx_.msg_id;
  if (tx_.accepted == 1) h += "\r\n\tfor <" + tx_.first_rcpt + ">";
  h += "; " + rfc5322_date() + "\r\n";
  return h;
}

void SmtpSession::begin_message() {
  tx_.msg_id = make_message_id();
  tx_.body = received_header();
  tx_.header_at = tx_.body.size();
  uint64_t limit = ctx_.policy->size_limit(facts());
  tx_.reader = std::make_unique<smtp::BodyReader>(
      tx_.bdat ? smtp::BodyReader::Mode::bdat : smtp::BodyReader::Mode::data,
      limit, ctx_.cfg->smtp.max_line_length, &tx_.body);
}

// Submission (RFC 6409 8.2, 8.3): a message without Date: or Message-ID:
// gets them here, after our Received: line.
void SmtpSession::finish_headers() {
  if (listener_.mode != ListenerConfig::Mode::submission) return;
  std::string_view client = std::string_view(tx_.body).substr(tx_.header_at);
  std::string add;
  if (!has_header(client, "Date:")) add += "Date: " + rfc5322_date() + "\r\n";
  if (!has_header(client, "Message-ID:")) {
    add += "Message-ID: <" + tx_.msg_id + "@" + ctx_.hostname + ">\r\n";
  }
  if (!add.empty()) tx_.body.insert(tx_.header_at, add);
}

void SmtpSession::refuse_faults(const smtp::BodyFaults& f,
                                std::string_view cmd) {
  current_cmd_ = std::string(cmd);
  if (f.too_big) {
    reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
  } else if (f.nul) {
    reply(554, "5.6.0", "Message refused: NUL byte in message");
  } else if (f.bare_lf || f.bare_cr) {
    reply(554, "5.5.2",
          std::string("Message refused: bare ") + (f.bare_lf ? "LF" : "CR") +
              " in message; lines must end with CRLF");
  } else if (f.line_too_long) {
    reply(554, "5.6.0",
          "Message refused: line longer than " +
              std::to_string(ctx_.cfg->smtp.max_line_length) + " bytes");
  }
}

awaitable<bool> SmtpSession::do_data(const smtp::Command& c) {
  if (!c.arg.empty()) {
    ++errors_;
    reply(501, "5.5.4", "Syntax: DATA");
    co_return true;
  }
  if (tx_.bdat) {
    ++errors_;
    reply(503, "5.5.1", "Error: DATA during BDAT");
    co_return true;
  }
  if (!tx_.active) {
    ++errors_;
    reply(503, "5.5.1", "Error: need MAIL command");
    co_return true;
  }
  if (tx_.accepted == 0) {
    ++errors_;
    reply(554, "5.5.1", "Error: no valid recipients");
    co_return true;
  }
  reply(354, "", "End data with <CR><LF>.<CR><LF>");
  begin_message();

  // The body: each read has data_block_timeout, the whole body
  // data_done_timeout (a trickling client is a slow client too).
  auto started = Clock::now();
  auto total = std::chrono::duration_cast<Clock::duration>(
      ctx_.cfg->smtp.data_done_timeout);
  while (true) {
    size_t used = tx_.reader->feed(pending());
    consume(used);
    if (tx_.reader->done()) break;
    auto left = total - (Clock::now() - started);
    auto block =
        std::min<Clock::duration>(ctx_.cfg->smtp.data_block_timeout, left);
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(block);
    if (secs.count() <= 0) secs = std::chrono::seconds(1);
    if (left <= Clock::duration::zero() || !co_await fill(secs)) {
      if (left <= Clock::duration::zero()) {
        log::line(id_, "timeout after DATA (total)");
        reply(421, "4.4.2", ctx_.hostname + " Error: timeout exceeded");
      }
      closing_ = true;
      co_return false;
    }
  }
  current_cmd_ = "END-OF-DATA";
  if (tx_.reader->faults().any()) {
    refuse_faults(tx_.reader->faults(), "END-OF-DATA");
    reset_transaction();
    co_return true;
  }
  co_await deliver();
  reset_transaction();
  co_return !closing_;
}

// RFC 3030 CHUNKING.  The chunk's bytes are read whatever we answer, so the
// command stream stays in step.
awaitable<bool> SmtpSession::do_bdat(const smtp::Command& c) {
  auto args = smtp::parse_bdat(c.arg);
  if (!args) {
    ++errors_;
    reply(501, "5.5.4", "Syntax: BDAT size [LAST]");
    closing_ = true;  // we cannot know where the next command starts
    co_return false;
  }
  bool refused = false;
  if (!tx_.active) {
    reply(503, "5.5.1", "Error: need MAIL command");
    refused = true;
  } else if (tx_.accepted == 0) {
    reply(554, "5.5.1", "Error: no valid recipients");
    refused = true;
  }
  if (!refused && !tx_.bdat) {
    tx_.bdat = true;
    begin_message();
  }

  uint64_t left = args->size;
  while (left > 0) {
    std::string_view avail = pending();
    size_t take = static_cast<size_t>(std::min<uint64_t>(left, avail.size()));
    if (take > 0) {
      if (!refused) tx_.reader->feed(avail.substr(0, take));
      consume(take);
      left -= take;
      continue;
    }
    if (!co_await fill(ctx_.cfg->smtp.data_block_timeout)) {
      closing_ = true;
      co_return false;
    }
  }
  if (refused) {
    ++errors_;
    co_return true;
  }
  if (!args->last) {
    reply(250, "2.0.0", std::to_string(args->size) + " octets received");
    co_return true;
  }
  current_cmd_ = "BDAT LAST";
  tx_.reader->finish();
  if (tx_.reader->faults().any()) {
    refuse_faults(tx_.reader->faults(), "BDAT LAST");
    reset_transaction();
    co_return true;
  }
  co_await deliver();
  reset_transaction();
  co_return !closing_;
}

// 250 only when every copy is durable: Maildir files for local users (on
// the disk pool, fsynced) and the spool record for remote recipients.
// Local first: a local failure stores nothing in the spool, so the
// client's retry cannot duplicate remote mail.
awaitable<void> SmtpSession::deliver() {
  finish_headers();
  const std::string& id = tx_.msg_id;
  size_t size = tx_.body.size();

  if (!tx_.local_users.empty()) {
    std::string root = ctx_.cfg->local.mail_root;
    std::vector<std::string> users = tx_.local_users;
    std::string_view bytes = tx_.body;
    auto msg_id = id;
    auto failure = std::make_shared<std::string>();
    // A named function object, not a temporary inside the co_await
    // expression: g++ 12 destroys such temporaries twice.
    auto job = [root, users, bytes, msg_id, failure]() {
      for (const auto& u : users) {
        std::string err;
        auto e = maildir_deliver(root + "/" + u, maildir_unique_name(msg_id, u),
                                 bytes, err);
        if (e) {
          *failure = err;
          return e;
        }
      }
      return std::error_code();
    };
    std::error_code ec = co_await run_on(*ctx_.disk, std::move(job));
    if (ec) {
      log::line(id, "local delivery failed error=" + log::quote(*failure));
      reply(451, "4.3.0", "Error: local delivery failed, try again later");
      co_return;
    }
  }

  std::string spool_id;
  if (!tx_.remote.empty()) {
    queue::NewMessage m;
    m.sender = tx_.sender;
    m.envid = tx_.envid;
    m.ret = tx_.ret;
    m.recipients = std::move(tx_.remote);
    m.body = std::move(tx_.body);
    m.queue_id = id;
    auto [ec, qid] = co_await submit(*ctx_.spool, std::move(m));  // NOLINT
    if (ec) {
      log::line(id, "spool failed error=" + log::quote(ec.message()));
      reply(451, "4.3.1", "Error: insufficient system storage, try later");
      co_return;
    }
    spool_id = qid;
  }

  ++messages_;
  size_t nrcpt = tx_.accepted;
  // body= tells DATA from BDAT (RFC 3030) in the log, so an operator can
  // see which transfer a peer MTA chose.
  log::line(id_, "queued qid=" + id + " size=" + std::to_string(size) +
                     " nrcpt=" + std::to_string(nrcpt) +
                     (tx_.bdat ? " body=bdat" : " body=data"));
  log::line(id,
            "from=<" + tx_.sender + "> size=" + std::to_string(size) +
                " nrcpt=" + std::to_string(nrcpt) + " session=" + id_ +
                (spool_id.empty() || spool_id == id ? std::string()
                                                     : " spool_id=" + spool_id));
  reply(250, "2.0.0", "Ok: queued as " + id);
}

// ---- STARTTLS and AUTH
// -------------------------------------------------------

awaitable<bool> SmtpSession::do_starttls(const smtp::Command& c) {
  if (!ctx_.tls || !listener_.starttls) {
    reply(454, "4.7.0", "TLS not available");
    co_return true;
  }
  if (tls_) {
    ++errors_;
    reply(503, "5.5.1", "Error: TLS already active");
    co_return true;
  }
  if (!c.arg.empty()) {
    ++errors_;
    reply(501, "5.5.4", "Syntax: STARTTLS");
    co_return true;
  }
  reply(220, "2.0.0", "Ready to start TLS");
  if (!co_await flush()) co_return false;

  // Anything pipelined after STARTTLS came in the clear: drop it, or an
  // attacker could inject commands into the TLS session (RFC 3207 4.1).
  in_.clear();
  pos_ = 0;

  tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *ctx_.tls);
  set_deadline(ctx_.cfg->smtp.command_timeout);
  auto [ec] =
      co_await tls_->async_handshake(asio::ssl::stream_base::server, kTuple);
  clear_deadline();
  if (ec) {
    log::line(id_, "tls handshake failed error=" + log::quote(ec.message()));
    tls_.reset();
    closing_ = true;
    co_return false;
  }
  log::line(id_, std::string("tls version=") +
                     SSL_get_version(tls_->native_handle()) +
                     " cipher=" + SSL_get_cipher_name(tls_->native_handle()));
  // RFC 3207 4.2: forget everything learnt before TLS.
  helo_.clear();
  esmtp_ = false;
  reset_transaction();
  co_return true;
}

awaitable<bool> SmtpSession::read_auth_line(std::string& out) {
  while (true) {
    auto r = smtp::next_line(pending(), kMaxCommandLine);
    if (r.status == smtp::LineStatus::complete) {
      out = std::string(r.line);
      consume(r.consumed);
      co_return true;
    }
    if (r.status != smtp::LineStatus::need_more) {
      consume(r.consumed ? r.consumed : pending().size());
      out = "\x01";  // not base64: the caller answers 501
      co_return true;
    }
    if (!co_await fill(ctx_.cfg->smtp.command_timeout)) co_return false;
  }
}

awaitable<bool> SmtpSession::do_auth(const smtp::Command& c) {
  if (!auth_allowed()) {
    if (ctx_.users && ctx_.tls && listener_.starttls) {
      reply(538, "5.7.11", "Encryption required: use STARTTLS first");
    } else {
      reply(503, "5.5.1", "Error: authentication not enabled");
    }
    co_return true;
  }
  if (authenticated_) {
    reply(503, "5.5.1", "Error: already authenticated");
    co_return true;
  }
  if (tx_.active) {
    reply(503, "5.5.1", "Error: AUTH not allowed during a mail transaction");
    co_return true;
  }
  if (helo_.empty()) {
    reply(503, "5.5.1", "Error: send EHLO first");
    co_return true;
  }
  std::string_view arg = c.arg;
  size_t sp = arg.find(' ');
  std::string mech = lower_ascii(arg.substr(0, sp));
  std::string initial = sp == std::string_view::npos
                            ? std::string()
                            : std::string(arg.substr(sp + 1));
  bool has_initial = sp != std::string_view::npos;

  auto decode = [](const std::string& line) -> std::optional<std::string> {
    if (line == "=") return std::string();  // RFC 4954: empty response
    return smtp::base64_decode(line);
  };

  std::string user, password;
  if (mech == "plain") {
    std::string resp = initial;
    if (!has_initial) {
      reply(334, "", "");
      if (!co_await read_auth_line(resp)) co_return false;
    }
    if (resp == "*") {
      reply(501, "5.0.0", "Authentication aborted");
      co_return true;
    }
    auto raw = decode(resp);
    size_t a = raw ? raw->find('\0') : std::string::npos;
    size_t b = a == std::string::npos ? a : raw->find('\0', a + 1);
    if (!raw || b == std::string::npos) {
      ++errors_;
      reply(501, "5.5.2", "Error: malformed AUTH PLAIN response");
      co_return true;
    }
    std::string authzid = raw->substr(0, a);
    user = raw->substr(a + 1, b - a - 1);
    password = raw->substr(b + 1);
    if (!authzid.empty() && authzid != user) {
      reply(535, "5.7.8", "Authentication credentials invalid");
      co_return true;
    }
  } else if (mech == "login") {
    // Clients send the user name with the command ("AUTH LOGIN dXNlcg==")
    // or wait for the "Username:" prompt.
    std::string line = initial;
    if (!has_initial) {
      reply(334, "", smtp::base64_encode("Username:"));
      if (!co_await read_auth_line(line)) co_return false;
    }
    if (line == "*") {
      reply(501, "5.0.0", "Authentication aborted");
      co_return true;
    }
    auto u = decode(line);
    if (!u) {
      ++errors_;
      reply(501, "5.5.2", "Error: malformed AUTH LOGIN response");
      co_return true;
    }
    user = *u;
    reply(334, "", smtp::base64_encode("Password:"));
    if (!co_await read_auth_line(line)) co_return false;
    if (line == "*") {
      reply(501, "5.0.0", "Authentication aborted");
      co_return true;
    }
    auto p = decode(line);
    if (!p) {
      ++errors_;
      reply(501, "5.5.2", "Error: malformed AUTH LOGIN response");
      co_return true;
    }
    password = *p;
  } else {
    reply(504, "5.5.4", "Unrecognized authentication mechanism");
    co_return true;
  }

  // PBKDF2 costs tens of milliseconds of CPU: off the io_context.
  const Users* users = ctx_.users;
  auto ok = std::make_shared<bool>(false);
  auto job = [users, user, password, ok]() {
    *ok = users->authenticate(user, password);
    return std::error_code();
  };
  co_await run_on(*ctx_.disk, std::move(job));
  if (!*ok) {
    log::line(id_, "auth mechanism=" + lower_ascii(mech) +
                       " user=" + log::quote(user) + " result=failed");
    reply(535, "5.7.8", "Authentication credentials invalid");
    if (++auth_failures_ >= kMaxAuthFailures) {
      reply(421, "4.7.0", ctx_.hostname + " Too many failed logins");
      closing_ = true;
      co_return false;
    }
    co_return true;
  }
  authenticated_ = true;
  auth_user_ = lower_ascii(user);
  log::line(id_, "auth mechanism=" + mech + " user=" + log::quote(auth_user_) +
                     " result=ok");
  reply(235, "2.7.0", "Authentication successful");
  co_return true;
}

}  // namespace ferry::gw
