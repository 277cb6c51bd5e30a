#include "gateway/smtp_lineio.h"

#include <algorithm>
#include <cctype>

#include "gateway/log.h"

namespace ferry::gw {

std::string SmtpReply::whole() const {
  std::string s = std::to_string(code);
  for (const auto& t : texts) s += " " + t;
  return s;
}

std::string SmtpReply::status() const {
  if (texts.empty()) return {};
  const std::string& t = texts.front();
  std::string w = t.substr(0, t.find(' '));
  if (w.size() < 5 || (w[0] != '2' && w[0] != '4' && w[0] != '5') ||
      w[1] != '.' || std::count(w.begin(), w.end(), '.') != 2) {
    return {};
  }
  for (char c : w) {
    if (c != '.' && !std::isdigit(static_cast<unsigned char>(c))) return {};
  }
  return w;
}

SmtpLineIo::SmtpLineIo(LinkTransport& t, std::chrono::milliseconds timeout,
                       std::error_code& ec, std::string& why,
                       std::string too_long_text)
    : t_(t),
      timeout_(timeout),
      ec_(ec),
      why_(why),
      too_long_text_(std::move(too_long_text)),
      timer_(t.executor()) {}

void SmtpLineIo::fail(std::error_code e, std::string text) {
  if (!ec_) {
    ec_ = e;
    why_ = std::move(text);
  }
}

asio::awaitable<bool> SmtpLineIo::flush() {
  if (ec_) co_return false;
  if (out_.empty()) co_return true;
  std::string out;
  out.swap(out_);
  std::error_code e;
  co_await t_.write(asio::buffer(out), e);
  if (e) {
    fail(e, "write: " + e.message());
    co_return false;
  }
  co_return true;
}

asio::awaitable<bool> SmtpLineIo::fill() {
  // Pipelining: what we owe goes out when we wait for the other side.
  if (!co_await flush()) co_return false;

  // The timer closes the transport, which ends the pending read.
  uint64_t gen = ++read_gen_;
  timer_.expires_after(timeout_);
  timer_.async_wait([this, gen](boost::system::error_code e) {
    if (!e && gen == read_gen_) {
      timed_out_ = true;
      t_.close();
    }
  });
  char buf[16384];
  std::error_code e;
  size_t n = co_await t_.read_some(asio::buffer(buf), e);
  timer_.cancel();
  ++read_gen_;

  if (timed_out_) {
    fail(std::make_error_code(std::errc::timed_out), "read: timed out");
    co_return false;
  }
  if (e || n == 0) {
    if (!e) e = std::make_error_code(std::errc::connection_reset);
    fail(e, "read: " + e.message());
    co_return false;
  }
  in_.append(buf, n);
  co_return true;
}

asio::awaitable<bool> SmtpLineIo::read_line(std::string& line) {
  for (;;) {
    size_t lf = in_.find('\n');
    if (lf != std::string::npos) {
      size_t end = lf > 0 && in_[lf - 1] == '\r' ? lf - 1 : lf;
      line.assign(in_, 0, end);
      in_.erase(0, lf + 1);
      co_return true;
    }
    if (in_.size() > kMaxLine) {
      fail(std::make_error_code(std::errc::protocol_error), too_long_text_);
      co_return false;
    }
    if (!co_await fill()) co_return false;
  }
}

asio::awaitable<bool> SmtpLineIo::read_reply(SmtpReply& r) {
  r = SmtpReply{};
  for (;;) {
    std::string line;
    if (!co_await read_line(line)) co_return false;
    auto digit = [&](size_t i) {
      return std::isdigit(static_cast<unsigned char>(line[i])) != 0;
    };
    if (line.size() < 3 || !digit(0) || !digit(1) || !digit(2) ||
        (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      fail(std::make_error_code(std::errc::protocol_error),
           "bad reply: " + ferry::log::quote(line));
      co_return false;
    }
    if (r.code == 0) {
      r.code = std::stoi(line.substr(0, 3));
      r.first = line;
    }
    r.texts.push_back(line.size() > 4 ? line.substr(4) : std::string());
    if (line.size() == 3 || line[3] == ' ') co_return true;
  }
}

std::string SmtpLineIo::take(size_t n) {
  std::string bytes = in_.substr(0, n);
  in_.erase(0, n);
  return bytes;
}

}  // namespace ferry::gw
