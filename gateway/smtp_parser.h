// SMTP server-side parsing: bytes in, values out.  Nothing here touches a
// socket; the session (smtp_session.h) feeds what it read and acts on the
// results, and the unit tests feed strings.
//
// Three pieces:
//  - next_line(): finds one command line (CRLF-terminated) in a buffer.
//  - parse_command() and parse_params(): verb, argument and ESMTP
//    parameters (RFC 5321 4.1.1, 4.1.2; RFC 1870, 6152, 6531, 3461, 4954).
//  - BodyReader: the message body state machine for DATA (end-of-data
//    detection and dot-unstuffing) and BDAT (raw chunks), which also notes
//    every shape we refuse after the end of the message: bare LF, bare CR,
//    NUL, over-long lines and oversize messages.
//
// All functions are pure and thread-compatible; a BodyReader belongs to one
// session.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry::gw::smtp {

// ---- command lines -------------------------------------------------------

enum class LineStatus {
  complete,   // `line` holds the text before CRLF; `consumed` covers CRLF
  need_more,  // no line terminator yet and the buffer is under the limit
  too_long,   // more than `max` bytes without a terminator
  bare_lf,    // the line ends in LF without CR (refused, never accepted)
};

struct LineResult {
  LineStatus status = LineStatus::need_more;
  std::string_view line;  // valid while the buffer is
  size_t consumed = 0;    // bytes to drop from the buffer (complete/bare_lf)
};

// Looks for the first LF in `buf`.  A line longer than `max` bytes (not
// counting CRLF) is too_long even if its LF is present.
LineResult next_line(std::string_view buf, size_t max);

enum class Verb {
  helo,
  ehlo,
  mail,
  rcpt,
  data,
  bdat,
  rset,
  noop,
  vrfy,
  expn,
  help,
  quit,
  starttls,
  auth,
  unknown,
};

struct Command {
  Verb verb = Verb::unknown;
  std::string name;  // upper-cased verb as sent ("MAIL")
  std::string arg;   // text after the verb and one space, as sent
};

// Splits "verb[ SP arg]"; verbs are case-insensitive.  For MAIL and RCPT
// the argument is what follows "FROM:" / "TO:" (which must be present, else
// verb is still mail/rcpt and `from_to_ok` is false).
struct ParsedCommand {
  Command cmd;
  bool from_to_ok = true;
};
ParsedCommand parse_command(std::string_view line);

// ESMTP parameters after a path: "KEY[=VALUE]" separated by spaces.  Keys
// are upper-cased; values kept as sent.  Returns false (and `error`) on an
// empty key or a value with control characters.
using Params = std::vector<std::pair<std::string, std::string>>;
bool parse_params(std::string_view text, Params& out, std::string& error);

// RFC 3461 xtext: "+HH" escapes, printable ASCII otherwise.
bool xtext_valid(std::string_view text);
std::string xtext_decode(std::string_view text);
// '+', '=' and bytes outside 33..126 become "+HH" (ORCPT, ENVID out).
std::string xtext_encode(std::string_view text);

// RFC 3461 NOTIFY list -> queue::Notify bits.  Returns nullopt if invalid
// (NEVER combined with anything, unknown words, empty list).
std::optional<uint8_t> parse_notify(std::string_view value);
// The NOTIFY value for such bits: "NEVER" or e.g. "SUCCESS,FAILURE".
std::string format_notify(uint8_t bits);

// Base64 for AUTH (RFC 4648, padding required, no whitespace).
std::optional<std::string> base64_decode(std::string_view in);
std::string base64_encode(std::string_view in);

// "BDAT size [LAST]"; nullopt on a syntax error.
struct BdatArgs {
  uint64_t size = 0;
  bool last = false;
};
std::optional<BdatArgs> parse_bdat(std::string_view arg);

// ---- replies -------------------------------------------------------------

// Formats a reply; `text` may hold several lines separated by '\n', which
// become a multi-line reply ("250-a", "250 b").  The enhanced code, when
// not empty, is repeated on every line (RFC 2034).
std::string format_reply(int code, std::string_view enhanced,
                         std::string_view text);

// ---- message bodies ------------------------------------------------------

// What went wrong inside a body.  Several may be set; the session refuses
// the message after its end with the first that applies, in the order
// size, nul, bare line ending, line length.
struct BodyFaults {
  bool bare_lf = false;
  bool bare_cr = false;
  bool nul = false;
  bool line_too_long = false;
  bool too_big = false;
  bool any() const {
    return bare_lf || bare_cr || nul || line_too_long || too_big;
  }
};

// Consumes body bytes.  In DATA mode it removes dot-stuffing and stops at
// the first CRLF "." CRLF (also "." CRLF as the very first line); "\n.\n",
// "\n.\r\n" and "\r.\r" are never an end, they are bare line endings and
// the message is refused after its real end.  In BDAT mode every byte is
// content and the caller counts the chunk length.
//
// Content goes to `out` (appended), up to `max_size` bytes of content;
// beyond that, or once any fault is set, bytes are only counted, so a
// refused message costs no memory.  `max_line` is the longest accepted
// line in bytes, CRLF excluded.
class BodyReader {
 public:
  enum class Mode { data, bdat };
  BodyReader(Mode mode, uint64_t max_size, size_t max_line, std::string* out);

  // Feeds bytes; returns how many were consumed.  In DATA mode that is
  // fewer than `in.size()` only when the end of data was reached (the rest
  // belongs to the next command).
  size_t feed(std::string_view in);

  // DATA mode: the terminating "." line was seen.
  bool done() const { return state_ == State::done; }

  // BDAT mode: call after the LAST chunk; a CR left pending is bare.
  void finish();

  const BodyFaults& faults() const { return faults_; }
  uint64_t size() const { return size_; }  // content bytes seen

 private:
  enum class State { line_start, dot, dot_cr, in_line, cr, done };
  void content(char c);
  void in_line_byte(char c);

  Mode mode_;
  uint64_t max_size_;
  size_t max_line_;
  std::string* out_;
  State state_ = State::line_start;
  size_t line_len_ = 0;
  uint64_t size_ = 0;
  BodyFaults faults_;
};

}  // namespace ferry::gw::smtp
