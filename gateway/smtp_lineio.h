// SMTP line I/O over a LinkTransport, shared by the ferry link session
// (link_session.h, both roles) and the plain ESMTP client (smtp_client.h):
// buffered writes, CRLF lines read with a per-read timeout, and replies
// ("NNN-text" ... "NNN text") read whole.  The parsing of commands and
// bodies is smtp_parser.h; this is only the plumbing under it.
//
// Contract:
//  - send() only buffers; flush() writes the buffer.  fill() flushes first,
//    so commands pipelined with send() go out when we wait for an answer.
//  - A line ends at LF; a CR before it is dropped.  A line is refused when
//    more than kMaxLine (4096) bytes are buffered without an LF.
//  - Each read waits at most `timeout`; then the transport is closed.
//  - A reply line must start with three digits followed by nothing, ' '
//    (the last line) or '-' (more lines follow).
//  - Every call returns false on failure and records the failure in the
//    owner's `ec`/`why` (the first one only; the owner may record its own
//    and may clear them).  The texts, as the call's log line shows them:
//      "read: timed out" (ec timed_out), "read: <cause>" (the transport's
//      error, end of stream included; a read of 0 bytes without one is
//      connection_reset), "write: <cause>", `too_long_text` and
//      "bad reply: <line>" (both protocol_error; the line quoted as
//      log::quote() does).
//    While `ec` is set flush() writes nothing and returns false, so
//    reading fails once the buffered input is used up.
//  - Byte counts are the transport's (bytes_in(), bytes_out()); unsent()
//    is what send() buffered and flush() has not written yet.
//
// Concurrency: one coroutine at a time, on the transport's executor; not
// thread-safe.  The transport and the owner's `ec`/`why` must outlive it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "gateway/link_session.h"

namespace ferry::gw {

// One reply, possibly of several lines.
struct SmtpReply {
  int code = 0;                    // of the first line
  std::string first;               // the first line, whole
  std::vector<std::string> texts;  // each line's text after "NNN[- ]"

  // "550 5.1.1 no such user": the code and the lines' texts, joined.
  std::string whole() const;
  // The RFC 3463 status ("5.1.1") when the first line starts with one;
  // empty otherwise.
  std::string status() const;
};

class SmtpLineIo {
 public:
  static constexpr size_t kMaxLine = 4096;  // longest line accepted

  // `too_long_text` is the failure text for an over-long line.
  SmtpLineIo(LinkTransport& t, std::chrono::milliseconds timeout,
             std::error_code& ec, std::string& why, std::string too_long_text);

  void send(std::string_view s) { out_.append(s); }
  size_t unsent() const { return out_.size(); }

  // Writes what send() buffered.
  asio::awaitable<bool> flush();
  // Flushes, then reads at least one byte more into the input buffer.
  asio::awaitable<bool> fill();
  // One line without its terminator.
  asio::awaitable<bool> read_line(std::string& line);
  // One whole reply.
  asio::awaitable<bool> read_reply(SmtpReply& r);

  // Raw input (BDAT chunks): the bytes buffered, and taking them.
  size_t buffered() const { return in_.size(); }
  std::string take(size_t n);
  // Forgets buffered input (nothing sent before a TLS handshake counts).
  void discard_input() { in_.clear(); }

  // Records a failure in the owner's `ec`/`why` unless one is recorded
  // already (the first failure ends the call; later ones follow from it).
  void fail(std::error_code e, std::string text);

 private:
  LinkTransport& t_;
  std::chrono::milliseconds timeout_;
  std::error_code& ec_;
  std::string& why_;
  std::string too_long_text_;
  asio::steady_timer timer_;
  std::string in_, out_;
  uint64_t read_gen_ = 0;  // tells a late timer from the current read's
  bool timed_out_ = false;
};

}  // namespace ferry::gw
