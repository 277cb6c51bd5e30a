// Hayes result parser: bytes from the modem in, classified results out.
//
// The parser never touches a port.  The driver feeds it every byte it reads
// in command state and takes complete results out; whatever follows a
// CONNECT stays in the parser and is handed back with take_rest() as the
// first bytes of the data stream.
//
// Framing (HAYES.md §3): verbose results are `\r\nTEXT\r\n`, numeric ones
// `N\r` with no line feed, information text is framed like verbose results.
// A line therefore ends at CR or LF; an LF right after a CR belongs to the
// same terminator, and empty lines are skipped.  The parser accepts any
// S3/S4 pair through ResultParser::set_terminators().
//
// classify_line() is a pure function over one line; it is what the fuzzer
// and most unit tests exercise.  Concurrency: a ResultParser is a plain
// value; one thread (the modem's strand) uses it at a time.
#ifndef FERRY_MODEM_AT_PARSER_H_
#define FERRY_MODEM_AT_PARSER_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ferry::modem {

enum class ResultKind {
  ok,
  connect,
  ring,
  no_carrier,
  error,
  no_dialtone,  // NO DIALTONE and NO DIAL TONE
  busy,
  no_answer,
  delayed,
  blacklisted,
  voice,
  no_other,     // any other "NO <word>" line: a call failure (HAYES §4.3)
  ringing,      // ring-back heard (USR code 11); intermediate
  carrier,      // CARRIER <bps>; intermediate
  protocol,     // PROTOCOL: <name>; intermediate
  compression,  // COMPRESSION: <name>; intermediate
  echo,         // our own command coming back (E1)
  info,         // information text or an unsolicited line we do not know
  garbage,      // control characters or line noise
};

// Short upper-case name of a kind, for logs ("BUSY", "CONNECT", ...).
std::string_view to_string(ResultKind kind);

// True for results that end a command (OK, ERROR, CONNECT, NO CARRIER ...).
// RING, the negotiation lines, echoes and text are not final.
bool is_final(ResultKind kind);

struct AtResult {
  ResultKind kind = ResultKind::garbage;
  std::string text;            // the line as received, without terminators
  bool numeric = false;        // came in V0 form ("7")
  int code = -1;               // numeric code when numeric
  unsigned long speed = 0;     // CONNECT/CARRIER rate in bit/s; 0 if none
  std::string suffix;          // CONNECT: everything after the rate
  std::string protocol;        // CONNECT suffix or PROTOCOL: line, e.g. LAPM
  std::string compression;     // CONNECT suffix or COMPRESSION: line
  std::string modulation;      // CONNECT suffix, e.g. V34
  bool error_control = false;  // ARQ, LAPM, MNP or REL in a CONNECT suffix
};

// Classifies one line (no terminators).  `last_command` is the command the
// driver sent last (without its CR), so an echo of it is recognised; pass ""
// when unknown.  Never fails: unknown text is info, noise is garbage.
AtResult classify_line(std::string_view line,
                       std::string_view last_command = {});

class ResultParser {
 public:
  // Appends bytes read from the port.
  void feed(std::string_view bytes);

  // The next complete line, classified; nullopt when more bytes are
  // needed.  Lines longer than kMaxLine are cut and reported as garbage so
  // a chattering line cannot grow the buffer without bound.
  std::optional<AtResult> next();

  // The command just sent, for echo recognition.
  void expect_echo(std::string_view command) { last_command_ = command; }

  // S3 (end of line) and S4 (line feed) when the modem uses other values.
  void set_terminators(char s3, char s4) {
    s3_ = s3;
    s4_ = s4;
  }

  // Bytes fed but not yet returned as lines (the data after a CONNECT).
  // A line feed still owed by the CONNECT line's CR LF is dropped.
  std::string take_rest();

  // After take_rest(): the CONNECT line ended in CR and its LF has not
  // arrived yet, so a leading LF of the data stream is still framing.
  bool owes_line_feed() const { return owes_lf_; }

  // Drops everything buffered (before a new command, after a timeout).
  void clear();

  std::size_t buffered() const { return buf_.size(); }

  static constexpr std::size_t kMaxLine = 512;

 private:
  std::string buf_;
  std::string last_command_;
  char s3_ = '\r';
  char s4_ = '\n';
  bool after_cr_ = false;  // the last terminator was a CR: skip one LF
  bool owes_lf_ = false;
};

}  // namespace ferry::modem

#endif  // FERRY_MODEM_AT_PARSER_H_
