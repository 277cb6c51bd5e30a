#include "modem/at_parser.h"

#include <array>
#include <cctype>
#include <utility>

namespace ferry::modem {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool starts_with_word(std::string_view s, std::string_view word) {
  if (s.substr(0, word.size()) != word) return false;
  return s.size() == word.size() || s[word.size()] == ' ' ||
         s[word.size()] == '/' || s[word.size()] == ':';
}

// Leading decimal number of `s` (saturating); advances `s` past it.
unsigned long take_number(std::string_view& s) {
  unsigned long v = 0;
  while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
    if (v < 100000000UL) v = v * 10 + static_cast<unsigned>(s.front() - '0');
    s.remove_prefix(1);
  }
  return v;
}

// Reads the vendor suffixes of a CONNECT line: "/ARQ/V34/LAPM/V42BIS",
// "/REL", ZyXEL's "/V.32bis 14400/V.42bis".  Tokens are compared with dots
// and dashes removed so V.42bis and V42BIS are the same thing.
void read_connect_suffix(std::string_view suffix, AtResult& r) {
  std::string token;
  auto flush = [&] {
    std::string t;
    for (char c : token)
      if (c != '.' && c != '-') t += c;
    token.clear();
    if (t.empty()) return;
    if (t == "ARQ") {
      r.error_control = true;
    } else if (t == "LAPM" || t == "V42") {
      r.error_control = true;
      r.protocol = "LAPM";
    } else if (t == "REL" || t == "MNP" || t == "MNP4" || t == "MNP2") {
      r.error_control = true;
      if (r.protocol.empty()) r.protocol = t == "REL" ? "REL" : "MNP";
    } else if (t == "V42BIS" || t == "V44" || t == "MNP5" || t == "CLASS5") {
      r.compression = t;
    } else if (t.size() >= 2 && t[0] == 'V' && t[1] >= '0' && t[1] <= '9') {
      r.modulation = t;
    } else if (t == "HST" || t == "K56" || t == "X2" || t == "K56FLEX") {
      r.modulation = t;
    }
  };
  for (char c : upper(suffix)) {
    if (c == '/' || c == ' ' || c == '\t') {
      flush();
    } else {
      token += c;
    }
  }
  flush();
}

AtResult numeric_result(int code) {
  // Codes 0-8 are the same everywhere; the rest follow the Hayes table
  // (HAYES.md §4.3, §4.4).  Vendors disagree above 8, which is why the
  // driver forces verbose results and this is only a fallback.
  struct Entry {
    int code;
    ResultKind kind;
    unsigned long speed;
    const char* text;
  };
  static constexpr std::array<Entry, 32> kTable{{
      {0, ResultKind::ok, 0, "OK"},
      {1, ResultKind::connect, 0, "CONNECT"},
      {2, ResultKind::ring, 0, "RING"},
      {3, ResultKind::no_carrier, 0, "NO CARRIER"},
      {4, ResultKind::error, 0, "ERROR"},
      {5, ResultKind::connect, 1200, "CONNECT 1200"},
      {6, ResultKind::no_dialtone, 0, "NO DIALTONE"},
      {7, ResultKind::busy, 0, "BUSY"},
      {8, ResultKind::no_answer, 0, "NO ANSWER"},
      {10, ResultKind::connect, 2400, "CONNECT 2400"},
      {11, ResultKind::connect, 4800, "CONNECT 4800"},
      {12, ResultKind::connect, 9600, "CONNECT 9600"},
      {13, ResultKind::connect, 14400, "CONNECT 14400"},
      {14, ResultKind::connect, 19200, "CONNECT 19200"},
      {24, ResultKind::connect, 7200, "CONNECT 7200"},
      {25, ResultKind::connect, 12000, "CONNECT 12000"},
      {28, ResultKind::connect, 38400, "CONNECT 38400"},
      {40, ResultKind::carrier, 300, "CARRIER 300"},
      {46, ResultKind::carrier, 1200, "CARRIER 1200"},
      {47, ResultKind::carrier, 2400, "CARRIER 2400"},
      {48, ResultKind::carrier, 4800, "CARRIER 4800"},
      {49, ResultKind::carrier, 7200, "CARRIER 7200"},
      {50, ResultKind::carrier, 9600, "CARRIER 9600"},
      {51, ResultKind::carrier, 12000, "CARRIER 12000"},
      {52, ResultKind::carrier, 14400, "CARRIER 14400"},
      {66, ResultKind::compression, 0, "COMPRESSION: CLASS 5"},
      {67, ResultKind::compression, 0, "COMPRESSION: V.42BIS"},
      {69, ResultKind::compression, 0, "COMPRESSION: NONE"},
      {70, ResultKind::protocol, 0, "PROTOCOL: NONE"},
      {77, ResultKind::protocol, 0, "PROTOCOL: LAP-M"},
      {80, ResultKind::protocol, 0, "PROTOCOL: ALT"},
      {9, ResultKind::connect, 600, "CONNECT 600"},
  }};
  AtResult r;
  r.numeric = true;
  r.code = code;
  r.kind = ResultKind::info;
  for (const Entry& e : kTable) {
    if (e.code != code) continue;
    r.kind = e.kind;
    r.speed = e.speed;
    std::string_view t = e.text;
    if (e.kind == ResultKind::protocol) r.protocol = t.substr(10);
    if (e.kind == ResultKind::compression) r.compression = t.substr(13);
    break;
  }
  return r;
}

}  // namespace

std::string_view to_string(ResultKind kind) {
  switch (kind) {
    case ResultKind::ok:
      return "OK";
    case ResultKind::connect:
      return "CONNECT";
    case ResultKind::ring:
      return "RING";
    case ResultKind::no_carrier:
      return "NO_CARRIER";
    case ResultKind::error:
      return "ERROR";
    case ResultKind::no_dialtone:
      return "NO_DIALTONE";
    case ResultKind::busy:
      return "BUSY";
    case ResultKind::no_answer:
      return "NO_ANSWER";
    case ResultKind::delayed:
      return "DELAYED";
    case ResultKind::blacklisted:
      return "BLACKLISTED";
    case ResultKind::voice:
      return "VOICE";
    case ResultKind::no_other:
      return "NO_OTHER";
    case ResultKind::ringing:
      return "RINGING";
    case ResultKind::carrier:
      return "CARRIER";
    case ResultKind::protocol:
      return "PROTOCOL";
    case ResultKind::compression:
      return "COMPRESSION";
    case ResultKind::echo:
      return "ECHO";
    case ResultKind::info:
      return "INFO";
    case ResultKind::garbage:
      return "GARBAGE";
  }
  return "?";
}

bool is_final(ResultKind kind) {
  switch (kind) {
    case ResultKind::ok:
    case ResultKind::connect:
    case ResultKind::no_carrier:
    case ResultKind::error:
    case ResultKind::no_dialtone:
    case ResultKind::busy:
    case ResultKind::no_answer:
    case ResultKind::delayed:
    case ResultKind::blacklisted:
    case ResultKind::voice:
    case ResultKind::no_other:
      return true;
    default:
      return false;
  }
}

AtResult classify_line(std::string_view line, std::string_view last_command) {
  AtResult r;
  r.text = std::string(line);
  std::string_view t = trim(line);

  // Noise first: a result is printable ASCII.
  if (t.empty()) return r;
  for (char c : t) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u >= 0x7f) return r;
  }

  std::string up = upper(t);
  std::string_view u = up;

  // Our own command (E1), or any AT line: a modem never answers with one.
  if ((!last_command.empty() && up == upper(trim(last_command))) ||
      u.substr(0, 2) == "AT" || u == "A/") {
    r.kind = ResultKind::echo;
    return r;
  }

  // Numeric (V0) results: one or two digits.  Three digits are S-register
  // information text ("000").
  if (t.size() <= 2 && std::isdigit(static_cast<unsigned char>(t[0])) &&
      (t.size() == 1 || std::isdigit(static_cast<unsigned char>(t[1])))) {
    AtResult n = numeric_result(std::stoi(std::string(t)));
    n.text = r.text;
    return n;
  }

  if (u == "OK") {
    r.kind = ResultKind::ok;
  } else if (starts_with_word(u, "CONNECT")) {
    r.kind = ResultKind::connect;
    std::string_view rest = trim(t.substr(7));
    r.speed = take_number(rest);
    r.suffix = std::string(trim(rest));
    read_connect_suffix(r.suffix, r);
  } else if (u == "RINGING" || u == "RINGBACK") {
    r.kind = ResultKind::ringing;
  } else if (starts_with_word(u, "RING")) {
    r.kind = ResultKind::ring;
  } else if (u == "NO CARRIER") {
    r.kind = ResultKind::no_carrier;
  } else if (u == "NO DIALTONE" || u == "NO DIAL TONE") {
    r.kind = ResultKind::no_dialtone;
  } else if (u == "NO ANSWER") {
    r.kind = ResultKind::no_answer;
  } else if (u.substr(0, 3) == "NO " && u.size() > 3) {
    r.kind = ResultKind::no_other;
  } else if (starts_with_word(u, "ERROR") || u.substr(0, 10) == "+CME ERROR") {
    r.kind = ResultKind::error;
  } else if (u == "BUSY") {
    r.kind = ResultKind::busy;
  } else if (starts_with_word(u, "DELAYED")) {
    r.kind = ResultKind::delayed;
  } else if (starts_with_word(u, "BLACKLISTED")) {
    r.kind = ResultKind::blacklisted;
  } else if (u == "VOICE") {
    r.kind = ResultKind::voice;
  } else if (starts_with_word(u, "CARRIER")) {
    r.kind = ResultKind::carrier;
    std::string_view rest = trim(t.substr(7));
    r.speed = take_number(rest);
  } else if (u.substr(0, 9) == "PROTOCOL:") {
    r.kind = ResultKind::protocol;
    r.protocol = std::string(trim(t.substr(9)));
  } else if (u.substr(0, 12) == "COMPRESSION:") {
    r.kind = ResultKind::compression;
    r.compression = std::string(trim(t.substr(12)));
  } else {
    r.kind = ResultKind::info;
  }
  return r;
}

void ResultParser::feed(std::string_view bytes) { buf_.append(bytes); }

std::optional<AtResult> ResultParser::next() {
  // Skip terminators left from the previous line and empty lines.
  std::size_t i = 0;
  while (i < buf_.size() && (buf_[i] == s3_ || buf_[i] == s4_)) {
    after_cr_ = buf_[i] == s3_;
    ++i;
  }
  buf_.erase(0, i);

  std::size_t end = 0;
  while (end < buf_.size() && buf_[end] != s3_ && buf_[end] != s4_) ++end;
  if (end == buf_.size()) {
    if (buf_.size() <= kMaxLine) return std::nullopt;
    AtResult r;
    r.text = buf_.substr(0, kMaxLine);
    buf_.erase(0, kMaxLine);
    return r;  // garbage
  }

  std::string line = buf_.substr(0, end);
  after_cr_ = buf_[end] == s3_;
  buf_.erase(0, end + 1);
  if (line.size() > kMaxLine) {
    AtResult r;
    r.text = line.substr(0, kMaxLine);
    return r;  // garbage
  }
  return classify_line(line, last_command_);
}

std::string ResultParser::take_rest() {
  if (after_cr_ && !buf_.empty() && buf_.front() == s4_) buf_.erase(0, 1);
  owes_lf_ = after_cr_ && buf_.empty();
  after_cr_ = false;
  return std::exchange(buf_, std::string());
}

void ResultParser::clear() {
  buf_.clear();
  after_cr_ = false;
  owes_lf_ = false;
}

}  // namespace ferry::modem
