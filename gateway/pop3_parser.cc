#include "gateway/pop3_parser.h"

#include <array>
#include <cctype>
#include <utility>

namespace ferry::gw::pop3 {

namespace {

struct VerbName {
  std::string_view name;
  Verb verb;
};

constexpr std::array<VerbName, 15> kVerbs = {{
    {"USER", Verb::user},
    {"PASS", Verb::pass},
    {"QUIT", Verb::quit},
    {"STAT", Verb::stat},
    {"LIST", Verb::list},
    {"RETR", Verb::retr},
    {"DELE", Verb::dele},
    {"NOOP", Verb::noop},
    {"RSET", Verb::rset},
    {"TOP", Verb::top},
    {"UIDL", Verb::uidl},
    {"CAPA", Verb::capa},
    {"STLS", Verb::stls},
    {"APOP", Verb::apop},
    {"AUTH", Verb::auth},
}};

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

}  // namespace

LineResult next_line(std::string_view buf, size_t max) {
  LineResult r;
  size_t lf = buf.find('\n');
  if (lf == std::string_view::npos) {
    r.status = buf.size() > max ? LineStatus::too_long : LineStatus::need_more;
    return r;
  }
  if (lf > max) {
    r.status = LineStatus::too_long;
    return r;
  }
  size_t end = lf;
  if (end > 0 && buf[end - 1] == '\r') --end;
  r.status = LineStatus::complete;
  r.line = buf.substr(0, end);
  r.consumed = lf + 1;
  return r;
}

Command parse_command(std::string_view line) {
  Command c;
  size_t sp = line.find(' ');
  c.keyword = upper(line.substr(0, sp));
  for (const auto& v : kVerbs) {
    if (v.name == c.keyword) c.verb = v.verb;
  }
  if (sp == std::string_view::npos) return c;
  std::string_view rest = line.substr(sp + 1);

  // PASS: the rest of the line is the password, spaces included.
  if (c.verb == Verb::pass) {
    c.args.emplace_back(rest);
    return c;
  }

  // Everything else: words separated by spaces (runs of spaces tolerated).
  while (!rest.empty()) {
    size_t next = rest.find(' ');
    std::string_view word = rest.substr(0, next);
    if (!word.empty()) c.args.emplace_back(word);
    if (next == std::string_view::npos) break;
    rest.remove_prefix(next + 1);
  }
  return c;
}

std::optional<uint64_t> parse_number(std::string_view s) {
  if (s.empty() || s.size() > 9) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

std::string_view verb_name(Verb v) {
  for (const auto& e : kVerbs) {
    if (e.verb == v) return e.name;
  }
  return "UNKNOWN";
}

std::string ok(std::string_view text) {
  std::string out = "+OK";
  if (!text.empty()) {
    out += ' ';
    out += text;
  }
  out += "\r\n";
  return out;
}

std::string err(std::string_view text) { return err({}, text); }

std::string err(std::string_view code, std::string_view text) {
  std::string out = "-ERR";
  if (!code.empty()) {
    out += " [";
    out += code;
    out += ']';
  }
  if (!text.empty()) {
    out += ' ';
    out += text;
  }
  out += "\r\n";
  return out;
}

std::string sanitize(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < ' ' || u == 0x7f) c = '?';
  }
  return out;
}

// ---- MessageEncoder ------------------------------------------------------

void MessageEncoder::end_line() {
  // A line holding nothing (or only the CR of its CRLF) ends the header.
  bool empty = line_len_ == 0 || (line_len_ == 1 && prev_cr_);
  if (limit_) {
    if (in_body_) {
      if (body_lines_left_ > 0) --body_lines_left_;
    } else if (empty) {
      in_body_ = true;
    }
    if (in_body_ && body_lines_left_ == 0) done_ = true;
  } else if (empty) {
    in_body_ = true;
  }
  at_line_start_ = true;
  line_len_ = 0;
}

void MessageEncoder::feed(std::string_view chunk, std::string& out) {
  // TOP n: before the header has ended the count is not running yet, so
  // a "TOP 0" stops right after the blank line.
  out.reserve(out.size() + chunk.size() + chunk.size() / 32 + 8);
  for (size_t i = 0; i < chunk.size() && !done_; ++i) {
    char c = chunk[i];
    if (c == '\n') {
      if (!prev_cr_) out += '\r';
      out += '\n';
      end_line();
      prev_cr_ = false;
      continue;
    }
    if (at_line_start_ && c == '.') out += '.';
    at_line_start_ = false;
    out += c;
    ++line_len_;
    prev_cr_ = c == '\r';
  }
}

void MessageEncoder::finish(std::string& out) {
  if (!done_ && !at_line_start_) {
    if (!prev_cr_) out += '\r';
    out += '\n';
  }
  done_ = true;
  out += ".\r\n";
}

// ---- sizes ---------------------------------------------------------------

void WireSizeCounter::feed(std::string_view chunk) {
  for (char c : chunk) {
    if (c == '\n') {
      n_ += prev_cr_ ? 1 : 2;
      at_line_start_ = true;
    } else {
      ++n_;
      at_line_start_ = false;
    }
    prev_cr_ = c == '\r';
  }
}

uint64_t WireSizeCounter::total() const {
  if (at_line_start_) return n_;
  return n_ + (prev_cr_ ? 1 : 2);
}

uint64_t wire_size(std::string_view stored) {
  WireSizeCounter c;
  c.feed(stored);
  return c.total();
}

}  // namespace ferry::gw::pop3
