#include "gateway/smtp_parser.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

namespace ferry::gw::smtp {
namespace {

char upper(char c) {
  return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (upper(a[i]) != upper(b[i])) return false;
  }
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

struct VerbName {
  std::string_view name;
  Verb verb;
};
constexpr std::array<VerbName, 14> kVerbs{{
    {"HELO", Verb::helo},
    {"EHLO", Verb::ehlo},
    {"MAIL", Verb::mail},
    {"RCPT", Verb::rcpt},
    {"DATA", Verb::data},
    {"BDAT", Verb::bdat},
    {"RSET", Verb::rset},
    {"NOOP", Verb::noop},
    {"VRFY", Verb::vrfy},
    {"EXPN", Verb::expn},
    {"HELP", Verb::help},
    {"QUIT", Verb::quit},
    {"STARTTLS", Verb::starttls},
    {"AUTH", Verb::auth},
}};

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // RFC 3461 xtext uses upper-case hex only
}

}  // namespace

// ---- command lines -------------------------------------------------------

LineResult next_line(std::string_view buf, size_t max) {
  LineResult r;
  size_t lf = buf.find('\n');
  if (lf == std::string_view::npos) {
    r.status = buf.size() > max ? LineStatus::too_long : LineStatus::need_more;
    return r;
  }
  r.consumed = lf + 1;
  if (lf == 0 || buf[lf - 1] != '\r') {
    r.status = LineStatus::bare_lf;
    r.line = buf.substr(0, lf);
    return r;
  }
  r.line = buf.substr(0, lf - 1);
  r.status = r.line.size() > max ? LineStatus::too_long : LineStatus::complete;
  return r;
}

ParsedCommand parse_command(std::string_view line) {
  ParsedCommand out;
  size_t sp = line.find(' ');
  std::string_view verb = line.substr(0, sp);
  std::string_view arg =
      sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  arg = trim_right(arg);

  out.cmd.name.reserve(verb.size());
  for (char c : verb) out.cmd.name += upper(c);
  for (const auto& v : kVerbs) {
    if (v.name == out.cmd.name) out.cmd.verb = v.verb;
  }

  // MAIL FROM: / RCPT TO: — the keyword belongs to the command, the path
  // follows; clients put zero or one space after the colon.
  std::string_view keyword;
  if (out.cmd.verb == Verb::mail) keyword = "FROM:";
  if (out.cmd.verb == Verb::rcpt) keyword = "TO:";
  if (!keyword.empty()) {
    if (istarts_with(arg, keyword)) {
      arg.remove_prefix(keyword.size());
    } else {
      out.from_to_ok = false;
    }
  }
  out.cmd.arg = std::string(arg);
  return out;
}

bool parse_params(std::string_view text, Params& out, std::string& error) {
  out.clear();
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ' ') {
      ++i;
      continue;
    }
    size_t end = text.find(' ', i);
    if (end == std::string_view::npos) end = text.size();
    std::string_view tok = text.substr(i, end - i);
    i = end;

    size_t eq = tok.find('=');
    std::string_view key = tok.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : tok.substr(eq + 1);
    if (key.empty()) {
      error = "empty parameter keyword";
      return false;
    }
    for (char c : key) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') {
        error = "bad parameter keyword";
        return false;
      }
    }
    for (unsigned char c : value) {
      if (c < 33 || c == 127 || c == '=') {
        error = "bad parameter value";
        return false;
      }
    }
    std::string k;
    for (char c : key) k += upper(c);
    out.emplace_back(std::move(k), std::string(value));
  }
  return true;
}

bool xtext_valid(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '+') {
      if (i + 2 >= text.size()) return false;
      if (hex_value(text[i + 1]) < 0 || hex_value(text[i + 2]) < 0) {
        return false;
      }
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return false;
    }
  }
  return true;
}

std::string xtext_decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
        hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 +
                               hex_value(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string xtext_encode(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (c < 33 || c > 126 || c == '+' || c == '=') {
      out += '+';
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string format_notify(uint8_t bits) {
  if (bits & 1) return "NEVER";
  std::string out;
  auto add = [&](const char* w) {
    if (!out.empty()) out += ',';
    out += w;
  };
  if (bits & 2) add("SUCCESS");
  if (bits & 4) add("FAILURE");
  if (bits & 8) add("DELAY");
  return out;
}

std::optional<uint8_t> parse_notify(std::string_view value) {
  uint8_t bits = 0;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view word = value.substr(start, comma - start);
    if (iequals(word, "NEVER")) {
      bits |= 1;
    } else if (iequals(word, "SUCCESS")) {
      bits |= 2;
    } else if (iequals(word, "FAILURE")) {
      bits |= 4;
    } else if (iequals(word, "DELAY")) {
      bits |= 8;
    } else {
      return std::nullopt;
    }
    start = comma + 1;
  }
  if ((bits & 1) && bits != 1) return std::nullopt;  // NEVER stands alone
  return bits;
}

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=') {
        // Padding only at the very end, and only in the last two places.
        if (i + 4 != in.size() || k < 2) return std::nullopt;
        v[k] = 0;
        ++pad;
      } else {
        if (pad) return std::nullopt;
        v[k] = b64_value(c);
        if (v[k] < 0) return std::nullopt;
      }
    }
    uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>((n >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

std::string base64_encode(std::string_view in) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t n = (static_cast<uint8_t>(in[i]) << 16) |
                 (static_cast<uint8_t>(in[i + 1]) << 8) |
                 static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  size_t rest = in.size() - i;
  if (rest) {
    uint32_t n = static_cast<uint8_t>(in[i]) << 16;
    if (rest == 2) n |= static_cast<uint8_t>(in[i + 1]) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<BdatArgs> parse_bdat(std::string_view arg) {
  BdatArgs out;
  size_t sp = arg.find(' ');
  std::string_view num = arg.substr(0, sp);
  if (num.empty() || num.size() > 18) return std::nullopt;
  for (char c : num) {
    if (c < '0' || c > '9') return std::nullopt;
    out.size = out.size * 10 + static_cast<uint64_t>(c - '0');
  }
  if (sp != std::string_view::npos) {
    std::string_view rest = arg.substr(sp + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (!iequals(rest, "LAST")) return std::nullopt;
    out.last = true;
  }
  return out;
}

// ---- replies -------------------------------------------------------------

std::string format_reply(int code, std::string_view enhanced,
                         std::string_view text) {
  std::string out;
  std::string c = std::to_string(code);
  size_t start = 0;
  while (true) {
    size_t nl = text.find('\n', start);
    bool last = nl == std::string_view::npos;
    std::string_view part =
        text.substr(start, last ? std::string_view::npos : nl - start);
    out += c;
    out += last ? ' ' : '-';
    if (!enhanced.empty()) {
      out += enhanced;
      if (!part.empty()) out += ' ';
    }
    out += part;
    out += "\r\n";
    if (last) break;
    start = nl + 1;
  }
  return out;
}

// ---- message bodies ------------------------------------------------------

BodyReader::BodyReader(Mode mode, uint64_t max_size, size_t max_line,
                       std::string* out)
    : mode_(mode), max_size_(max_size), max_line_(max_line), out_(out) {}

void BodyReader::content(char c) {
  ++size_;
  if (size_ > max_size_) {
    faults_.too_big = true;
    return;
  }
  if (!faults_.any()) out_->push_back(c);
}

void BodyReader::in_line_byte(char c) {
  switch (c) {
    case '\r':
      state_ = State::cr;  // decided by the next byte
      return;
    case '\n':
      // A bare LF ends no line: staying "in line" keeps "\n.\r\n" from
      // looking like the end of data to us while it may to another MTA.
      faults_.bare_lf = true;
      content(c);
      line_len_ = 0;
      state_ = State::in_line;
      return;
    case '\0':
      faults_.nul = true;
      break;
    default:
      break;
  }
  content(c);
  if (++line_len_ > max_line_) faults_.line_too_long = true;
  state_ = State::in_line;
}

size_t BodyReader::feed(std::string_view in) {
  size_t i = 0;
  while (i < in.size()) {
    if (state_ == State::done) return i;

    // Fast path: a run of ordinary bytes inside a line.
    if (state_ == State::in_line || (state_ == State::line_start &&
                                     (mode_ == Mode::bdat || in[i] != '.'))) {
      size_t j = i;
      while (j < in.size() && in[j] != '\r' && in[j] != '\n' && in[j] != '\0') {
        ++j;
      }
      if (j > i) {
        size_t n = j - i;
        size_ += n;
        line_len_ += n;
        if (line_len_ > max_line_) faults_.line_too_long = true;
        if (size_ > max_size_) faults_.too_big = true;
        if (!faults_.any()) out_->append(in.data() + i, n);
        state_ = State::in_line;
        i = j;
        continue;
      }
    }

    char c = in[i++];
    switch (state_) {
      case State::line_start:
        if (mode_ == Mode::data && c == '.') {
          state_ = State::dot;
        } else {
          in_line_byte(c);
        }
        break;
      case State::dot:
        // The first dot of a line is transparency (RFC 5321 4.5.2): gone.
        if (c == '\r') {
          state_ = State::dot_cr;
        } else {
          in_line_byte(c);
        }
        break;
      case State::dot_cr:
        if (c == '\n') {
          state_ = State::done;
          return i;
        }
        faults_.bare_cr = true;
        content('\r');
        ++line_len_;
        in_line_byte(c);
        break;
      case State::in_line:
        in_line_byte(c);
        break;
      case State::cr:
        if (c == '\n') {
          content('\r');
          content('\n');
          line_len_ = 0;
          state_ = State::line_start;
        } else {
          faults_.bare_cr = true;
          content('\r');
          ++line_len_;
          in_line_byte(c);
        }
        break;
      case State::done:
        return i - 1;
    }
  }
  return i;
}

void BodyReader::finish() {
  if (state_ == State::cr || state_ == State::dot_cr) {
    faults_.bare_cr = true;
    content('\r');
    state_ = State::in_line;
  }
}

}  // namespace ferry::gw::smtp
