// POP3 server-side parsing and formatting: bytes in, values out.  Nothing
// here touches a socket or a file; pop3_session.h feeds what it read and
// writes what these functions produce, and the unit tests feed strings.
//
// Three pieces:
//  - next_line() and parse_command(): one command line (RFC 1939 section 3:
//    a keyword, arguments separated by single spaces, CRLF; a bare LF is
//    accepted too, since some clients send it and nothing is ambiguous).
//  - ok() / err(): status lines, with RFC 2449 response codes ("[IN-USE]").
//  - MessageEncoder: turns the stored bytes of a message into the
//    multi-line reply of RETR or TOP: dot-stuffing, LF-only lines converted
//    to CRLF on the fly (CRLF is sent as is), the TOP line limit and the
//    terminating ".".  It works on chunks so that a large message is never
//    held in memory whole.
//
// All functions are pure and thread-compatible; an encoder belongs to one
// reply.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::gw::pop3 {

// ---- command lines -------------------------------------------------------

enum class LineStatus {
  complete,   // `line` holds the text before CRLF/LF; `consumed` covers it
  need_more,  // no terminator yet and the buffer is under the limit
  too_long,   // more than `max` bytes without a terminator
};

struct LineResult {
  LineStatus status = LineStatus::need_more;
  std::string_view line;  // valid while the buffer is
  size_t consumed = 0;    // bytes to drop from the buffer when complete
};

// Finds the first line in `buf`.  RFC 2449 limits a command to 255 octets
// including CRLF; the session passes a larger `max` to be lenient with
// long passwords.
LineResult next_line(std::string_view buf, size_t max);

enum class Verb {
  user,
  pass,
  quit,
  stat,
  list,
  retr,
  dele,
  noop,
  rset,
  top,
  uidl,
  capa,
  stls,
  apop,
  auth,
  unknown
};

struct Command {
  Verb verb = Verb::unknown;
  std::string keyword;            // as sent, upper-cased
  std::vector<std::string> args;  // split on spaces (PASS: see below)
};

// Splits a command line.  Keywords are case-insensitive.  For PASS the
// whole rest of the line after "PASS " is one argument, because RFC 1939
// lets a password contain spaces.  Never fails: an empty line or an
// unknown keyword gives Verb::unknown.
Command parse_command(std::string_view line);

// A message number or a TOP line count: decimal digits only, no sign, at
// most 9 digits (so "0" parses; the session decides what is in range).
std::optional<uint64_t> parse_number(std::string_view s);

// The keyword as it appears in logs ("RETR").
std::string_view verb_name(Verb v);

// ---- replies -------------------------------------------------------------

// "+OK text\r\n" (text may be empty: "+OK\r\n").
std::string ok(std::string_view text);
// "-ERR text\r\n", or "-ERR [CODE] text\r\n" when `code` is not empty.
std::string err(std::string_view text);
std::string err(std::string_view code, std::string_view text);

// A value made safe for one reply line: CR, LF and other control bytes
// become '?'.  Used for anything that came from outside (file names).
std::string sanitize(std::string_view text);

// ---- message bodies ------------------------------------------------------

// Wire form of one message for RETR (all lines) or TOP n (the header, the
// blank line, then at most n body lines).
//
//   MessageEncoder enc;          // or MessageEncoder enc(5) for TOP 5
//   while (read a chunk) { enc.feed(chunk, out); if (enc.done()) break; }
//   enc.finish(out);             // completes the last line, adds ".\r\n"
//
// Line ends: "\r\n" goes out unchanged; a "\n" without "\r" before it goes
// out as "\r\n"; a lone "\r" inside a line is content and goes out as is.
// A line starting with "." gets one more "." in front (RFC 1939 3).
// A final line without a terminator is completed with CRLF.
class MessageEncoder {
 public:
  MessageEncoder() = default;
  explicit MessageEncoder(uint64_t top_body_lines)
      : limit_(true), body_lines_left_(top_body_lines) {}

  // Appends the wire form of `chunk` to `out`.  Once done(), input is
  // ignored.
  void feed(std::string_view chunk, std::string& out);
  // True when TOP's limit has been reached and no more input is wanted.
  bool done() const { return done_; }
  // Completes an unterminated last line and appends the ".\r\n"
  // terminator.  Call once.
  void finish(std::string& out);

 private:
  void end_line();

  bool limit_ = false;
  uint64_t body_lines_left_ = 0;
  bool in_body_ = false;
  bool done_ = false;
  bool at_line_start_ = true;
  bool prev_cr_ = false;
  size_t line_len_ = 0;  // bytes of the current line so far, CR included
};

// Bytes a message of `stored` bytes takes on the wire without stuffing and
// terminator: each LF not preceded by CR counts one more, and an
// unterminated last line two more.  This is the size LIST and STAT report.
uint64_t wire_size(std::string_view stored);

// The same, incrementally, for a file read in chunks.
class WireSizeCounter {
 public:
  void feed(std::string_view chunk);
  uint64_t total() const;

 private:
  uint64_t n_ = 0;
  bool prev_cr_ = false;
  bool at_line_start_ = true;
};

}  // namespace ferry::gw::pop3
