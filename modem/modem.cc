#include "modem/modem.h"

#include <sys/stat.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>

namespace ferry::modem {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

namespace {

std::string kv_value(std::string s) {
  for (char& c : s)
    if (c == ' ' || c == '\t') c = '_';
  return s.empty() ? "-" : s;
}

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t)
      .count();
}

// Failure a final result stands for when it ends a dial or an answer.
std::error_code call_error(const AtResult& r) {
  switch (r.kind) {
    case ResultKind::busy:
      return ModemErrc::busy;
    case ResultKind::no_answer:
      return ModemErrc::no_answer;
    case ResultKind::no_dialtone:
      return ModemErrc::no_dialtone;
    case ResultKind::no_carrier:
      return ModemErrc::no_carrier;
    case ResultKind::blacklisted:
      return ModemErrc::blacklisted;
    case ResultKind::delayed:
      return ModemErrc::delayed;
    case ResultKind::voice:
      return ModemErrc::voice;
    case ResultKind::error:
      return ModemErrc::modem_error;
    default:
      return ModemErrc::call_failed;
  }
}

// Digits, * # A-D and the Hayes dial modifiers (HAYES §5.1).  Anything else
// (a CR, a second command) is refused so a number cannot smuggle commands.
bool valid_dial_string(const std::string& s) {
  if (s.empty() || s.size() > 60) return false;
  for (char c : s) {
    if (std::strchr("0123456789*#ABCDabcdTtPpWw,@!;-() ", c) == nullptr)
      return false;
  }
  return true;
}

}  // namespace

Modem::Modem(asio::any_io_executor ex, ModemProfile profile, std::string name,
             LogFn log)
    : ex_(std::move(ex)),
      profile_(std::move(profile)),
      name_(std::move(name)),
      log_(std::move(log)) {}

Modem::~Modem() { close(); }

void Modem::log(const std::string& kv) const {
  emit_log(log_, "modem " + name_ + ": " + kv);
}

// ---- open ----

asio::awaitable<Modem::OpenResult> Modem::open(asio::any_io_executor ex,
                                               std::string port_path,
                                               ModemProfile profile,
                                               std::string lock_dir,
                                               LogFn log) {
  std::string name = profile.name;
  if (name.empty()) name = std::filesystem::path(port_path).filename().string();
  std::unique_ptr<Modem> m(new Modem(ex, profile, name, std::move(log)));

  // Lock the name we were given and, for a symlink such as /dev/modem,
  // the device it points to, so programs using either name see the lock.
  std::vector<std::string> names{port_path};
  std::error_code fs_ec;
  auto real = std::filesystem::canonical(port_path, fs_ec);
  if (!fs_ec && real.string() != port_path &&
      uucp_lock_name(real.string()) != uucp_lock_name(port_path))
    names.push_back(real.string());

  const auto lock_deadline = Clock::now() + m->scaled(profile.lock_wait);
  for (const std::string& device : names) {
    UucpLock lock;
    for (;;) {
      pid_t holder = 0, stale = 0;
      std::error_code ec = lock.acquire(lock_dir, device, &holder, &stale);
      if (stale != 0) {
        m->log("event=lock lock=" + lock_dir + "/" + uucp_lock_name(device) +
               " stale_pid=" + std::to_string(stale) + " action=taken-over");
      }
      if (!ec) break;
      if (ec == ModemErrc::port_locked && Clock::now() < lock_deadline) {
        co_await m->sleep(std::chrono::milliseconds(200));
        continue;
      }
      m->log("event=lock lock=" + lock_dir + "/" + uucp_lock_name(device) +
             " result=failed error=" + kv_value(ec.message()) +
             (holder ? " pid=" + std::to_string(holder) : std::string()));
      m->locks_.clear();
      co_return OpenResult{ec, nullptr};
    }
    m->locks_.push_back(std::move(lock));
  }

  std::error_code ec =
      SerialPort::open(ex, port_path, profile, name, m->log_, m->port_);
  if (ec) {
    m->locks_.clear();
    co_return OpenResult{ec, nullptr};
  }

  ec = co_await m->reset_and_init();
  if (ec) {
    m->close();
    co_return OpenResult{ec, nullptr};
  }
  co_return OpenResult{{}, std::move(m)};
}

asio::awaitable<std::error_code> Modem::reset_and_init() {
  const ModemProfile& p = profile_;
  if (port_->lines().known()) port_->lines().set_dtr(true);

  // ATZ.  A modem left online by a crashed predecessor would take it as
  // data, so a modem that does not answer gets one escape and a retry.
  CommandReply r = co_await command(p.reset_command, p.reset_timeout);
  if (r.ec == ModemErrc::not_responding) {
    co_await sleep(p.guard_time);
    co_await write_all("+++", p.command_timeout);
    co_await sleep(p.guard_time);
    r = co_await command(p.reset_command, p.reset_timeout);
  }
  if (r.ec || r.final.kind != ResultKind::ok) {
    std::error_code ec = r.ec ? r.ec : call_error(r.final);
    log("event=reset command=" + kv_value(p.reset_command) +
        " result=" + (r.ec ? "timeout" : kv_value(r.final.text)) +
        " error=" + kv_value(ec.message()));
    co_return ec;
  }

  // The OK can come before the stored profile has settled (HAYES §13.1).
  co_await sleep(p.reset_pause);
  port_->flush_input();
  parser_.clear();

  r = co_await command(p.init_string, p.command_timeout);
  if (r.ec || r.final.kind != ResultKind::ok) {
    std::error_code ec = r.ec ? r.ec : std::error_code(ModemErrc::modem_error);
    log("event=init command=" + kv_value(p.init_string) +
        " result=" + (r.ec ? "timeout" : kv_value(r.final.text)) +
        " error=" + kv_value(ec.message()));
    co_return ec;
  }
  for (const std::string& extra : p.optional_init) {
    r = co_await command(extra, p.command_timeout);
    if (r.ec == ModemErrc::not_responding) {
      log("event=init command=" + kv_value(extra) +
          " result=timeout error=modem_not_responding");
      co_return r.ec;
    }
    if (r.final.kind != ResultKind::ok)
      log("event=init command=" + kv_value(extra) +
          " result=" + kv_value(r.final.text) + " action=ignored");
  }
  log("event=ready transport=" + std::string(port_->transport()) +
      " lines=" + std::string(port_->lines().source()));
  co_return std::error_code();
}

// ---- low-level I/O ----

asio::awaitable<void> Modem::sleep(ms d) {
  asio::steady_timer t(ex_, d);
  co_await t.async_wait(kUseTuple);
}

asio::awaitable<std::error_code> Modem::write_all(std::string bytes,
                                                  ms timeout) {
  asio::steady_timer timer(ex_, timeout);
  auto which = co_await (
      asio::async_write(port_->descriptor(), asio::buffer(bytes), kUseTuple) ||
      timer.async_wait(kUseTuple));
  if (which.index() == 1) co_return ModemErrc::not_responding;  // flow ctl
  auto [ec, n] = std::get<0>(which);
  (void)n;
  if (ec) co_return ModemErrc::port_io;
  co_return std::error_code();
}

asio::awaitable<std::error_code> Modem::read_more(Clock::time_point deadline) {
  char buf[512];
  asio::steady_timer timer(ex_, deadline);
  auto which = co_await (
      port_->descriptor().async_read_some(asio::buffer(buf), kUseTuple) ||
      timer.async_wait(kUseTuple));
  if (which.index() == 1) co_return ModemErrc::not_responding;
  auto [ec, n] = std::get<0>(which);
  if (ec) {
    // EOF/EIO: the tty was hung up under us (a PTY whose master closed).
    log("event=read error=" + kv_value(ec.message()));
    co_return ModemErrc::port_io;
  }
  parser_.feed(std::string_view(buf, n));
  co_return std::error_code();
}

void Modem::note_ring() {
  ++rings_;
  last_ring_ = Clock::now();
  log("event=ring count=" + std::to_string(rings_));
}

asio::awaitable<std::error_code> Modem::next_line(Clock::time_point deadline,
                                                  AtResult& out) {
  for (;;) {
    while (auto r = parser_.next()) {
      if (r->kind == ResultKind::echo || r->kind == ResultKind::garbage)
        continue;
      out = std::move(*r);
      co_return std::error_code();
    }
    std::error_code ec = co_await read_more(deadline);
    if (ec) co_return ec;
  }
}

// ---- commands ----

asio::awaitable<CommandReply> Modem::command(std::string line, ms timeout) {
  CommandReply reply;
  if (!port_) {
    reply.ec = ModemErrc::port_unavailable;
    co_return reply;
  }

  // Lines that came in since the last command: count RINGs, drop the rest.
  while (auto r = parser_.next())
    if (r->kind == ResultKind::ring) note_ring();
  parser_.clear();

  parser_.expect_echo(line);
  reply.ec = co_await write_all(line + "\r", scaled(profile_.command_timeout));
  if (reply.ec) co_return reply;

  const auto deadline = Clock::now() + scaled(timeout);
  for (;;) {
    AtResult r;
    std::error_code ec = co_await next_line(deadline, r);
    if (ec) {
      reply.ec = ec;
      if (ec == ModemErrc::not_responding) {
        // Whatever comes late must not answer the next command.
        port_->flush_input();
        parser_.clear();
      }
      co_return reply;
    }
    if (r.kind == ResultKind::ring) {
      note_ring();
    } else if (r.kind == ResultKind::carrier ||
               r.kind == ResultKind::protocol ||
               r.kind == ResultKind::compression ||
               r.kind == ResultKind::ringing) {
      reply.progress.push_back(std::move(r));
    } else if (is_final(r.kind)) {
      reply.final = std::move(r);
      co_return reply;
    } else {
      reply.info.push_back(r.text);
    }
  }
}

// ---- dial and answer ----

namespace {

ConnectInfo connect_info(const CommandReply& reply) {
  ConnectInfo c;
  const AtResult& f = reply.final;
  c.speed = f.speed;
  c.suffix = f.suffix;
  c.protocol = f.protocol;
  c.compression = f.compression;
  c.modulation = f.modulation;
  c.error_control = f.error_control;
  c.text = f.text;
  for (const AtResult& p : reply.progress) {
    if (p.kind == ResultKind::carrier) c.carrier_speed = p.speed;
    if (p.kind == ResultKind::protocol && c.protocol.empty())
      c.protocol = p.protocol;
    if (p.kind == ResultKind::compression && c.compression.empty())
      c.compression = p.compression;
  }
  if (c.protocol == "LAP-M") c.protocol = "LAPM";
  if (!c.protocol.empty() && c.protocol != "NONE") c.error_control = true;
  return c;
}

std::string connect_kv(const ConnectInfo& c) {
  std::string s = " speed=" + std::to_string(c.speed);
  if (c.carrier_speed) s += " carrier=" + std::to_string(c.carrier_speed);
  if (!c.protocol.empty()) s += " protocol=" + kv_value(c.protocol);
  if (!c.compression.empty()) s += " compression=" + kv_value(c.compression);
  if (!c.modulation.empty()) s += " modulation=" + kv_value(c.modulation);
  return s;
}

}  // namespace

asio::awaitable<CallResult> Modem::dial(std::string number) {
  CallResult result;
  if (!valid_dial_string(number)) {
    result.ec = make_error_code(std::errc::invalid_argument);
    log("event=dial number=" + kv_value(number) +
        " result=refused error=invalid_number");
    co_return result;
  }
  if (online_ || !port_) {
    result.ec = online_ ? ModemErrc::call_failed : ModemErrc::port_unavailable;
    log("event=dial number=" + number +
        " result=refused error=" + kv_value(result.ec.message()));
    co_return result;
  }

  const std::string cmd = std::string("ATD") +
                          (profile_.dial_mode == DialMode::pulse ? "P" : "T") +
                          profile_.dial_prefix + number;
  const auto start = Clock::now();
  log("event=dial number=" + number + " command=" + kv_value(cmd));
  CommandReply reply = co_await command(cmd, profile_.dial_timeout);

  if (reply.ec == ModemErrc::not_responding) {
    // Any character aborts a dial (HAYES §9.3); a modem that then answers
    // is alive and the far end simply did not pick up.
    co_await write_all("\r", scaled(profile_.command_timeout));
    AtResult r;
    std::error_code ec =
        co_await next_line(Clock::now() + scaled(profile_.command_timeout), r);
    result.ec = ec ? std::error_code(ModemErrc::not_responding)
                   : std::error_code(ModemErrc::no_answer);
    log("event=dial number=" + number +
        " result=timeout error=" + kv_value(result.ec.message()) +
        " elapsed_ms=" + std::to_string(ms_since(start)));
    co_return result;
  }
  if (reply.ec) {
    result.ec = reply.ec;
    log("event=dial number=" + number +
        " result=failed error=" + kv_value(reply.ec.message()));
    co_return result;
  }
  result.result_text = reply.final.text;
  if (reply.final.kind != ResultKind::connect) {
    result.ec = call_error(reply.final);
    log("event=dial number=" + number + " result=" +
        kv_value(reply.final.text) + " error=" + kv_value(result.ec.message()) +
        " elapsed_ms=" + std::to_string(ms_since(start)));
    co_return result;
  }

  result.connect = connect_info(reply);
  log("event=dial number=" + number + " result=CONNECT" +
      connect_kv(result.connect) +
      " elapsed_ms=" + std::to_string(ms_since(start)));
  enter_data_mode(result.connect);
  co_return result;
}

asio::awaitable<CallResult> Modem::wait_for_call(ms max_wait) {
  CallResult result;
  if (online_ || !port_) {
    result.ec = online_ ? ModemErrc::call_failed : ModemErrc::port_unavailable;
    co_return result;
  }
  const bool modem_answers = profile_.answer == AnswerMethod::modem;
  const unsigned wanted = std::max(1u, profile_.answer_rings);
  if (modem_answers) {
    CommandReply r = co_await command("ATS0=" + std::to_string(wanted),
                                      profile_.command_timeout);
    if (r.ec || r.final.kind != ResultKind::ok) {
      result.ec = r.ec ? r.ec : std::error_code(ModemErrc::modem_error);
      co_return result;
    }
  }
  // A daemon waits in short slices between dial-outs: say it once.
  if (!listen_logged_) {
    log(std::string("event=listen answer=") +
        (modem_answers ? "modem" : "host") + " rings=" +
        std::to_string(wanted));
    listen_logged_ = true;
  }

  // Leftover lines may hold RINGs that came during earlier commands.
  while (auto r = parser_.next())
    if (r->kind == ResultKind::ring) note_ring();
  if (rings_ > 0 && Clock::now() - last_ring_ > scaled(profile_.ring_gap))
    rings_ = 0;

  const auto wait_end = max_wait.count() > 0 ? Clock::now() + scaled(max_wait)
                                             : Clock::time_point::max();
  CommandReply answer;
  for (;;) {
    if (!modem_answers && rings_ >= wanted) {
      log("event=answer rings=" + std::to_string(rings_));
      answer = co_await command("ATA", profile_.answer_timeout);
      break;
    }
    // Next deadline: the caller giving up (ring gap) or our own limit.
    auto deadline = wait_end;
    if (rings_ > 0) {
      auto gap_end = last_ring_ + scaled(profile_.ring_gap);
      if (modem_answers && rings_ >= wanted)
        gap_end = last_ring_ + scaled(profile_.answer_timeout);
      deadline = std::min(deadline, gap_end);
    }
    AtResult r;
    std::error_code ec = co_await next_line(deadline, r);
    if (ec == ModemErrc::not_responding) {
      if (rings_ > 0 && Clock::now() < wait_end) {
        log("event=answer result=abandoned rings=" + std::to_string(rings_));
        rings_ = 0;
        result.ec = ModemErrc::call_abandoned;
        co_return result;
      }
      result.ec = rings_ > 0 ? ModemErrc::call_abandoned : ModemErrc::no_call;
      rings_ = 0;
      co_return result;
    }
    if (ec) {
      result.ec = ec;
      co_return result;
    }
    if (r.kind == ResultKind::ring) {
      note_ring();
    } else if (modem_answers && (r.kind == ResultKind::carrier ||
                                 r.kind == ResultKind::protocol ||
                                 r.kind == ResultKind::compression)) {
      answer.progress.push_back(std::move(r));
    } else if (modem_answers && is_final(r.kind) && r.kind != ResultKind::ok) {
      answer.final = std::move(r);
      break;
    }
  }
  rings_ = 0;

  if (answer.ec) {
    result.ec = answer.ec == ModemErrc::not_responding
                    ? std::error_code(ModemErrc::no_carrier)
                    : answer.ec;
    log("event=answer result=timeout error=" + kv_value(result.ec.message()));
    co_return result;
  }
  result.result_text = answer.final.text;
  if (answer.final.kind != ResultKind::connect) {
    result.ec = call_error(answer.final);
    log("event=answer result=" + kv_value(answer.final.text) +
        " error=" + kv_value(result.ec.message()));
    co_return result;
  }
  result.connect = connect_info(answer);
  log("event=answer result=CONNECT" + connect_kv(result.connect));
  enter_data_mode(result.connect);
  co_return result;
}

// ---- data mode ----

void Modem::enter_data_mode(const ConnectInfo&) {
  online_ = true;
  listen_logged_ = false;
  lost_ = false;
  dcd_seen_ = false;
  bytes_in_ = bytes_out_ = 0;
  call_start_ = Clock::now();
  ++call_;
  pending_ = parser_.take_rest();
  owes_lf_ = parser_.owes_line_feed();
  parser_.clear();
  if (port_->lines().known()) {
    asio::co_spawn(ex_, watch_carrier(life_, call_), asio::detached);
  } else {
    log("event=carrier-watch source=result-codes note=no_DCD_on_this_port");
  }
}

// Polls DCD while the call lasts.  Holds only a weak reference to the
// modem: after the Modem is gone (or the call ended) it returns.
asio::awaitable<void> Modem::watch_carrier(std::weak_ptr<int> life,
                                           unsigned call) {
  const ms period = std::max(ms(1), scaled(profile_.line_poll));
  for (;;) {
    {
      asio::steady_timer t(co_await asio::this_coro::executor, period);
      co_await t.async_wait(kUseTuple);
    }
    if (life.expired() || call_ != call || !online_ || !port_) co_return;
    std::optional<LineState> s = port_->lines().get();
    if (!s) continue;
    if (s->dcd) {
      dcd_seen_ = true;
    } else if (dcd_seen_) {
      carrier_lost("dcd");
      co_return;
    }
  }
}

void Modem::carrier_lost(const char* source) {
  if (!online_) return;
  online_ = false;
  lost_ = true;
  log(std::string("event=carrier-lost source=") + source + " bytes_in=" +
      std::to_string(bytes_in_) + " bytes_out=" + std::to_string(bytes_out_) +
      " duration_ms=" + std::to_string(ms_since(call_start_)));
  boost::system::error_code ignored;
  if (port_) port_->descriptor().cancel(ignored);
}

boost::system::error_code Modem::before_read(asio::mutable_buffer buf,
                                             std::size_t& n) {
  n = 0;
  if (!pending_.empty() && online_) {
    if (owes_lf_ && pending_.front() == '\n') pending_.erase(0, 1);
    owes_lf_ = false;
    n = std::min(buf.size(), pending_.size());
    std::memcpy(buf.data(), pending_.data(), n);
    pending_.erase(0, n);
    bytes_in_ += n;
    if (n > 0) return {};
  }
  if (!online_ || !port_) {
    return std::error_code(lost_ ? ModemErrc::carrier_lost
                                 : ModemErrc::not_connected);
  }
  return {};
}

boost::system::error_code Modem::after_read(asio::mutable_buffer buf,
                                            std::size_t& n,
                                            boost::system::error_code ec) {
  if (ec) {
    n = 0;
    if (lost_) return std::error_code(ModemErrc::carrier_lost);
    if (ec == asio::error::eof || ec.value() == EIO) {
      carrier_lost("port-hangup");
      return std::error_code(ModemErrc::carrier_lost);
    }
    if (!online_) return std::error_code(ModemErrc::not_connected);
    return ec;
  }
  char* p = static_cast<char*>(buf.data());
  if (owes_lf_ && n > 0 && p[0] == '\n') {
    std::memmove(p, p + 1, n - 1);
    --n;
  }
  owes_lf_ = false;

  // "\r\nNO CARRIER\r\n" ending a chunk: the modem left data mode.  Where
  // DCD is known and still up, it is data after all.
  std::string_view chunk(p, n);
  std::string_view body = chunk;
  while (!body.empty() && (body.back() == '\r' || body.back() == '\n'))
    body.remove_suffix(1);
  constexpr std::string_view kNoCarrier = "\r\nNO CARRIER";
  if (body.size() >= kNoCarrier.size() && body.size() < chunk.size() &&
      body.substr(body.size() - kNoCarrier.size()) == kNoCarrier) {
    bool dcd_up = false;
    bool dcd_known = false;
    if (port_->lines().known()) {
      auto s = port_->lines().get();
      dcd_known = s.has_value();
      dcd_up = s && s->dcd;
    }
    if (!dcd_up) {
      n = body.size() - kNoCarrier.size();
      bytes_in_ += n;
      carrier_lost(dcd_known ? "dcd" : "no-carrier-text");
      if (n == 0) return std::error_code(ModemErrc::carrier_lost);
      return {};
    }
  }
  bytes_in_ += n;
  return {};
}

boost::system::error_code Modem::before_write() {
  if (!online_ || !port_)
    return std::error_code(lost_ ? ModemErrc::carrier_lost
                                 : ModemErrc::not_connected);
  return {};
}

boost::system::error_code Modem::after_write(boost::system::error_code ec) {
  if (!ec) return ec;
  if (lost_) return std::error_code(ModemErrc::carrier_lost);
  if (ec.value() == EIO || ec == asio::error::broken_pipe) {
    carrier_lost("port-hangup");
    return std::error_code(ModemErrc::carrier_lost);
  }
  if (!online_) return std::error_code(ModemErrc::not_connected);
  return ec;
}

// ---- hang-up ----

asio::awaitable<std::error_code> Modem::hangup() {
  if (!port_) co_return std::error_code();
  const bool was_online = online_;
  const bool had_carrier = was_online || lost_;
  const auto start = Clock::now();
  online_ = false;
  ++call_;  // stops the carrier watcher
  pending_.clear();
  {
    boost::system::error_code ignored;
    port_->descriptor().cancel(ignored);  // pending stream operations
  }

  const bool dtr_possible =
      port_->lines().known() && profile_.hangup != HangupMethod::escape;
  std::string method = "ath";
  bool done = false;

  if (was_online && dtr_possible) {
    method = "dtr";
    std::error_code ec = port_->lines().set_dtr(false);
    if (!ec) {
      co_await sleep(scaled(profile_.dtr_drop));
      port_->lines().set_dtr(true);
      co_await sleep(scaled(ms(200)));
      port_->flush_input();
      parser_.clear();
      // &D2 drops the call; check that the modem is in command state.
      CommandReply r = co_await command("AT", profile_.command_timeout);
      done = !r.ec && r.final.kind == ResultKind::ok;
      if (!done) {
        // Lines like NO CARRIER may have raced our AT; ask once more.
        r = co_await command("AT", profile_.command_timeout);
        done = !r.ec && r.final.kind == ResultKind::ok;
      }
    }
    if (!done) method = "dtr+escape";
  }

  if (!done && was_online) {
    // Guard time, +++, guard time (HAYES §7), then ATH.
    if (method == "ath") method = "escape";
    co_await sleep(scaled(profile_.guard_time));
    parser_.clear();
    co_await write_all("+++", scaled(profile_.command_timeout));
    AtResult r;
    auto deadline = Clock::now() + scaled(profile_.guard_time) +
                    scaled(profile_.command_timeout);
    while (!(co_await next_line(deadline, r)))
      if (r.kind == ResultKind::ok || r.kind == ResultKind::no_carrier) break;
  }

  if (!done) {
    CommandReply r = co_await command("ATH", profile_.hangup_timeout);
    // NO CARRIER before our OK is the modem reporting the drop; read on.
    if (!r.ec && r.final.kind == ResultKind::no_carrier) {
      AtResult more;
      auto deadline = Clock::now() + scaled(profile_.command_timeout);
      if (!(co_await next_line(deadline, more)) && more.kind == ResultKind::ok)
        r.final = more;
      else
        r = co_await command("ATH", profile_.hangup_timeout);
    }
    done = !r.ec && r.final.kind == ResultKind::ok;
  }

  lost_ = false;
  if (!done) {
    log("event=hangup method=" + method + " result=failed error=" +
        kv_value(std::error_code(ModemErrc::hangup_failed).message()));
    co_return ModemErrc::hangup_failed;
  }
  log("event=hangup method=" + method + " result=ok" +
      (had_carrier ? " bytes_in=" + std::to_string(bytes_in_) +
                         " bytes_out=" + std::to_string(bytes_out_)
                   : std::string()) +
      " elapsed_ms=" + std::to_string(ms_since(start)));
  co_return std::error_code();
}

void Modem::close() {
  if (port_) {
    if (online_ && port_->lines().known()) {
      port_->lines().set_dtr(false);
      log("event=close action=dtr-drop note=call_still_up");
    }
    online_ = false;
    ++call_;
    port_->close();
    port_.reset();
    log("event=close");
  }
  locks_.clear();
}

}  // namespace ferry::modem
