#include "gateway/pop3_session.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <tuple>
#include <utility>

#include "gateway/log.h"

namespace ferry::gw {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;

namespace {

constexpr auto kTuple = asio::as_tuple(use_awaitable);

// RFC 2449 allows 255 octets per command; passwords can be long, so we
// accept more before calling a line abusive.
constexpr size_t kMaxLine = 1024;
// How long a goodbye line may take to leave after a timeout or a stop.
constexpr std::chrono::milliseconds kGoodbyeTimeout{2000};
constexpr size_t kChunk = 64 * 1024;

std::string base36(uint64_t v, int width) {
  static const char kDigits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string out(static_cast<size_t>(width), '0');
  for (int i = width - 1; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kDigits[v % 36];
    v /= 36;
  }
  return out;
}

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// The result of a login attempt, computed off the io thread.
struct Login {
  enum class Result {
    ok,
    bad_credentials,
    in_use,
    failed
  } result = Result::failed;
  std::unique_ptr<Maildrop> box;
  std::string error;  // for the log: path and cause
};

// Password check (PBKDF2, deliberately slow) and mailbox snapshot (reads
// every file for its size).  A plain function, not a lambda, because
// g++ 12 mishandles lambda temporaries in co_await expressions.
awaitable<Login> login_work(const Users* users, std::string mail_root,
                            std::string user, std::string password) {
  Login out;
  if (users == nullptr || !users->authenticate(user, password)) {
    out.result = Login::Result::bad_credentials;
    co_return out;
  }
  std::error_code ec;
  out.box = Maildrop::open(mail_root + "/" + user, ec, out.error);
  if (out.box) {
    out.result = Login::Result::ok;
  } else if (ec == std::errc::resource_unavailable_try_again) {
    out.result = Login::Result::in_use;
  } else {
    out.result = Login::Result::failed;
  }
  co_return out;
}

}  // namespace

std::string make_pop3_session_id() {
  static std::atomic<uint64_t> counter{0};
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  return "P" + base36(static_cast<uint64_t>(secs), 7) +
         base36(counter.fetch_add(1) % (36ull * 36 * 36 * 36 * 36), 5);
}

Pop3Session::Pop3Session(std::shared_ptr<const Pop3Context> ctx,
                         tcp::socket socket, std::string id)
    : ctx_(std::move(ctx)),
      socket_(std::move(socket)),
      id_(std::move(id)),
      timer_(socket_.get_executor()) {
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  if (!ec) {
    peer_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
}

Pop3Session::~Pop3Session() = default;

void Pop3Session::stop() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->stopping_ = true;
    boost::system::error_code ec;
    self->socket_.cancel(ec);
  });
}

// ---- the conversation ----------------------------------------------------

awaitable<void> Pop3Session::run(bool refuse_busy) {
  log::line(id_, "connect client=" + peer_ +
                     " listener=" + log::quote(ctx_->options.name));
  if (refuse_busy) {
    status_ = "busy";
    reply(pop3::err("SYS/TEMP", "too many sessions, try again later"));
    arm(kGoodbyeTimeout);
    co_await flush();
  } else {
    reply(pop3::ok("ferry POP3 server ready"));
    bool more = true;
    while (more && state_ != State::done) {
      // Answer every complete line we have; read when we run out.
      auto lr = pop3::next_line(std::string_view(in_).substr(pos_), kMaxLine);
      if (lr.status == pop3::LineStatus::complete) {
        pop3::Command c = pop3::parse_command(lr.line);
        pos_ += lr.consumed;
        more = co_await handle(c);
        continue;
      }
      if (lr.status == pop3::LineStatus::too_long) {
        status_ = "line-too-long";
        reply(pop3::err("line too long"));
        co_await flush();
        break;
      }
      in_.erase(0, pos_);
      pos_ = 0;
      more = co_await flush() && co_await read_more();
    }
    if (state_ == State::done) co_await flush();

    // Goodbyes for the ways a session ends without QUIT.
    if (timed_out_ && state_ != State::done) {
      status_ = "timeout";
      out_ = pop3::err("autologout: idle for too long");
      co_await write_all(out_);
    } else if (stopping_ && state_ != State::done) {
      status_ = "shutdown";
      out_ = pop3::err("SYS/TEMP", "server shutting down");
      co_await write_all(out_);
    }
  }

  disarm();
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  box_.reset();  // releases the lock; marks are forgotten unless committed
  log::line(id_, "disconnect user=" + (user_.empty() ? "-" : user_) + " retr=" +
                     std::to_string(retr_) + " top=" + std::to_string(top_) +
                     " dele=" + std::to_string(dele_) +
                     " removed=" + std::to_string(removed_) +
                     " bytes=" + std::to_string(bytes_) + " status=" + status_);
}

awaitable<bool> Pop3Session::handle(const pop3::Command& c) {
  using pop3::Verb;
  bool authz = state_ == State::authorization;

  // Commands valid in every state.
  switch (c.verb) {
    case Verb::capa:
      do_capa();
      co_return true;
    case Verb::quit:
      do_quit();
      co_return false;
    default:
      break;
  }

  if (authz) {
    switch (c.verb) {
      case Verb::user:
        do_user(c);
        co_return true;
      case Verb::pass:
        co_return co_await do_pass(c);
      case Verb::stls:
        co_return co_await do_stls();
      case Verb::apop:
      case Verb::auth:
        reply(pop3::err("not supported; use USER and PASS"));
        co_return true;
      case Verb::unknown:
        reply(pop3::err("unknown command"));
        co_return true;
      default:
        reply(pop3::err("not valid before login"));
        co_return true;
    }
  }

  switch (c.verb) {
    case Verb::stat:
      reply(pop3::ok(std::to_string(box_->live_count()) + " " +
                     std::to_string(box_->live_size())));
      break;
    case Verb::list:
      do_list(c, false);
      break;
    case Verb::uidl:
      do_list(c, true);
      break;
    case Verb::retr:
      co_return co_await do_send(c, false);
    case Verb::top:
      co_return co_await do_send(c, true);
    case Verb::dele:
      do_dele(c);
      break;
    case Verb::noop:
      reply(pop3::ok(""));
      break;
    case Verb::rset:
      box_->unmark_all();
      reply(pop3::ok(std::to_string(box_->live_count()) + " messages"));
      break;
    case Verb::unknown:
      reply(pop3::err("unknown command"));
      break;
    default:
      reply(pop3::err("not valid after login"));
      break;
  }
  co_return true;
}

bool Pop3Session::plain_login_allowed() const {
  return tls_ != nullptr || ctx_->options.trusted_local;
}

void Pop3Session::do_capa() {
  std::string r = pop3::ok("capability list follows");
  r += "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
  if (state_ == State::authorization) {
    if (plain_login_allowed()) r += "USER\r\n";
    if (ctx_->tls != nullptr && tls_ == nullptr) r += "STLS\r\n";
  }
  r += "IMPLEMENTATION ferry\r\n.\r\n";
  reply(r);
}

void Pop3Session::do_user(const pop3::Command& c) {
  if (!plain_login_allowed()) {
    reply(pop3::err("AUTH", "plaintext login needs TLS; use STLS first"));
    return;
  }
  if (c.args.size() != 1) {
    reply(pop3::err("usage: USER name"));
    return;
  }
  // Any name is accepted here so that USER reveals nothing; PASS decides.
  user_ = lower_ascii(c.args[0]);
  reply(pop3::ok("send PASS"));
}

awaitable<bool> Pop3Session::do_pass(const pop3::Command& c) {
  if (!plain_login_allowed()) {
    reply(pop3::err("AUTH", "plaintext login needs TLS; use STLS first"));
    co_return true;
  }
  if (user_.empty() || c.args.size() != 1) {
    reply(pop3::err("send USER first"));
    co_return true;
  }
  std::string user = user_;
  user_.clear();  // a new USER is needed after a failure

  // Check the password and take the snapshot off the io thread.
  Login login;
  if (!Users::valid_name(user)) {
    login.result = Login::Result::bad_credentials;
  } else if (ctx_->disk != nullptr) {
    login = co_await asio::co_spawn(
        ctx_->disk->get_executor(),
        login_work(ctx_->users, ctx_->options.mail_root, user, c.args[0]),
        use_awaitable);
  } else {
    login = co_await login_work(ctx_->users, ctx_->options.mail_root, user,
                                c.args[0]);
  }

  switch (login.result) {
    case Login::Result::ok:
      break;
    case Login::Result::bad_credentials:
      log::line(id_, "login failed user=" + log::quote(user) +
                         " reason=bad-credentials");
      reply(pop3::err("AUTH", "invalid user name or password"));
      if (++failed_logins_ >= ctx_->options.max_failed_logins) {
        status_ = "too-many-failures";
        state_ = State::done;
        co_return false;
      }
      co_return true;
    case Login::Result::in_use:
      log::line(id_, "login failed user=" + user + " reason=in-use");
      reply(pop3::err("IN-USE", "mailbox is open in another session"));
      co_return true;
    case Login::Result::failed:
      log::line(id_, "login failed user=" + user +
                         " reason=mailbox error=" + log::quote(login.error));
      reply(pop3::err("SYS/TEMP", "mailbox unavailable, try again later"));
      co_return true;
  }

  user_ = user;
  box_ = std::move(login.box);
  state_ = State::transaction;
  std::string count = std::to_string(box_->live_count());
  std::string octets = std::to_string(box_->live_size());
  log::line(id_, "login user=" + user_ + " messages=" + count +
                     " octets=" + octets + (tls_ ? " tls=yes" : " tls=no"));
  reply(
      pop3::ok(user_ + " has " + count + " messages (" + octets + " octets)"));
  co_return true;
}

awaitable<bool> Pop3Session::do_stls() {
  if (ctx_->tls == nullptr || tls_ != nullptr) {
    reply(pop3::err(tls_ ? "TLS already active" : "TLS not available"));
    co_return true;
  }
  reply(pop3::ok("begin TLS negotiation"));
  if (!co_await flush()) co_return false;

  // Whatever followed STLS in the same packet came in the clear.
  in_.clear();
  pos_ = 0;
  user_.clear();

  tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *ctx_->tls);
  arm(ctx_->options.idle_timeout);
  auto [ec] =
      co_await tls_->async_handshake(asio::ssl::stream_base::server, kTuple);
  disarm();
  if (ec) {
    log::line(id_, "tls failed error=" + log::quote(ec.message()));
    status_ = "tls-failed";
    tls_.reset();
    state_ = State::done;
    out_.clear();
    co_return false;
  }
  SSL* ssl = tls_->native_handle();
  log::line(id_, std::string("tls protocol=") + SSL_get_version(ssl) +
                     " cipher=" + SSL_get_cipher_name(ssl));
  co_return true;
}

void Pop3Session::do_quit() {
  status_ = "quit";
  if (state_ != State::transaction) {
    state_ = State::done;
    reply(pop3::ok("bye"));
    return;
  }

  // UPDATE state.
  std::string error;
  std::error_code ec = box_->commit(removed_, error);
  state_ = State::done;
  if (ec) {
    status_ = "update-failed";
    log::line(id_,
              "update failed user=" + user_ + " error=" + log::quote(error));
    reply(pop3::err("SYS/TEMP", "some deleted messages not removed"));
    return;
  }
  reply(pop3::ok("bye, " + std::to_string(box_->live_count()) +
                 " messages left"));
}

const MaildropMessage* Pop3Session::message_arg(const pop3::Command& c,
                                                size_t arg, uint64_t& n) {
  auto num =
      c.args.size() > arg ? pop3::parse_number(c.args[arg]) : std::nullopt;
  if (!num) {
    reply(pop3::err("expected a message number"));
    return nullptr;
  }
  n = *num;
  const MaildropMessage* m = box_->find(n);
  if (m == nullptr) {
    bool gone = n >= 1 && n <= box_->messages().size();
    reply(pop3::err(gone ? "message " + std::to_string(n) + " is deleted"
                         : "no such message"));
  }
  return m;
}

void Pop3Session::do_list(const pop3::Command& c, bool uidl) {
  auto value = [uidl](const MaildropMessage& m) {
    return uidl ? m.uid : std::to_string(m.size);
  };
  if (!c.args.empty()) {
    uint64_t n = 0;
    if (const MaildropMessage* m = message_arg(c, 0, n)) {
      reply(pop3::ok(std::to_string(n) + " " + value(*m)));
    }
    return;
  }
  std::string r = pop3::ok(std::to_string(box_->live_count()) + " messages");
  const auto& msgs = box_->messages();
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].deleted) continue;
    r += std::to_string(i + 1) + " " + value(msgs[i]) + "\r\n";
  }
  r += ".\r\n";
  reply(r);
}

void Pop3Session::do_dele(const pop3::Command& c) {
  uint64_t n = 0;
  if (message_arg(c, 0, n) == nullptr) return;
  box_->mark_deleted(n);
  ++dele_;
  reply(pop3::ok("message " + std::to_string(n) + " deleted"));
}

// RETR n / TOP n lines: the file is read in chunks and encoded on the fly.
// XXX(pop3): the reads are blocking calls on the io thread; Maildir files
// are local and small next to a modem's pace, but a slow disk stalls every
// session of this io_context while a chunk is read.
awaitable<bool> Pop3Session::do_send(const pop3::Command& c, bool top) {
  uint64_t n = 0;
  const MaildropMessage* m = message_arg(c, 0, n);
  if (m == nullptr) co_return true;
  std::optional<uint64_t> lines;
  if (top) {
    lines = c.args.size() == 2 ? pop3::parse_number(c.args[1]) : std::nullopt;
    if (!lines) {
      reply(pop3::err("usage: TOP message lines"));
      co_return true;
    }
  }

  int fd = ::open(m->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    log::line(id_, "retr failed user=" + user_ +
                       " file=" + log::quote(m->path) +
                       " error=" + log::quote(std::strerror(e)));
    reply(pop3::err("SYS/TEMP",
                    "message " + std::to_string(n) + " cannot be read now"));
    co_return true;
  }

  // The status line goes out with the first chunk.
  reply(pop3::ok(std::to_string(m->size) + " octets"));
  pop3::MessageEncoder enc =
      top ? pop3::MessageEncoder(*lines) : pop3::MessageEncoder();
  std::string buf(kChunk, '\0');
  bool ok = true;
  while (ok && !enc.done()) {
    ssize_t got = ::read(fd, buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      // Half a reply cannot be taken back: log and close.
      int e = errno;
      log::line(id_, "retr failed user=" + user_ +
                         " file=" + log::quote(m->path) +
                         " error=" + log::quote(std::strerror(e)));
      ::close(fd);
      status_ = "read-error";
      state_ = State::done;
      out_.clear();
      co_return false;
    }
    if (got == 0) break;
    size_t before = out_.size();
    enc.feed(std::string_view(buf.data(), static_cast<size_t>(got)), out_);
    bytes_ += out_.size() - before;
    if (out_.size() >= kChunk) ok = co_await flush();
  }
  ::close(fd);
  if (!ok) co_return false;
  enc.finish(out_);

  if (top) {
    ++top_;
  } else {
    ++retr_;
    box_->mark_retrieved(n);
  }
  co_return true;
}

// ---- I/O -----------------------------------------------------------------

// The autologout timer: when it fires, the pending read or write is
// cancelled.  The generation count tells a stale expiry (already queued
// when the operation finished) from a real one.
void Pop3Session::arm(std::chrono::milliseconds d) {
  uint64_t gen = ++timer_gen_;
  timer_.expires_after(d);
  timer_.async_wait(
      [self = shared_from_this(), gen](const boost::system::error_code& ec) {
        if (ec || gen != self->timer_gen_) return;
        self->timed_out_ = true;
        boost::system::error_code ignored;
        self->socket_.cancel(ignored);
      });
}

void Pop3Session::disarm() {
  ++timer_gen_;
  timer_.cancel();
}

awaitable<bool> Pop3Session::read_more() {
  if (stopping_) co_return false;
  char buf[4096];
  boost::system::error_code ec;
  size_t n = 0;
  arm(ctx_->options.idle_timeout);
  if (tls_) {
    std::tie(ec, n) = co_await tls_->async_read_some(asio::buffer(buf), kTuple);
  } else {
    std::tie(ec, n) =
        co_await socket_.async_read_some(asio::buffer(buf), kTuple);
  }
  disarm();
  if (ec) {
    if (ec != asio::error::eof && ec != asio::error::operation_aborted &&
        ec != asio::ssl::error::stream_truncated) {
      log::line(id_, "read error=" + log::quote(ec.message()));
    }
    co_return false;
  }
  in_.append(buf, n);
  co_return true;
}

awaitable<bool> Pop3Session::write_all(std::string_view data) {
  if (data.empty()) co_return true;
  boost::system::error_code ec;
  size_t n = 0;
  // A write that cannot finish within the idle timeout means a client
  // that stopped reading; autologout applies to it as well.
  arm(timed_out_ || stopping_ ? kGoodbyeTimeout : ctx_->options.idle_timeout);
  if (tls_) {
    std::tie(ec, n) =
        co_await asio::async_write(*tls_, asio::buffer(data), kTuple);
  } else {
    std::tie(ec, n) =
        co_await asio::async_write(socket_, asio::buffer(data), kTuple);
  }
  disarm();
  co_return !ec;
}

awaitable<bool> Pop3Session::flush() {
  if (out_.empty()) co_return true;
  std::string data = std::move(out_);
  out_.clear();
  co_return co_await write_all(data);
}

}  // namespace ferry::gw
