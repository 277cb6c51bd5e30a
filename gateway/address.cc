// RFC 5321 path parsing.  A small hand-written scanner over the bytes: the
// grammar is tiny, and a scanner says exactly where and why a path is bad.

#include "gateway/address.h"

#include <arpa/inet.h>

#include <cstddef>

namespace ferry::gw {
namespace {

constexpr size_t kMaxLocal = 64;
constexpr size_t kMaxDomain = 255;
constexpr size_t kMaxPath = 256;

bool is_alpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// RFC 5322 atext.
bool is_atext(unsigned char c) {
  if (is_alpha(c) || is_digit(c)) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '/':
    case '=':
    case '?':
    case '^':
    case '_':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
      return true;
    default:
      return false;
  }
}

// Length of the well-formed UTF-8 sequence (non-ASCII) starting at s[i],
// or 0 if it is not one (overlong forms and surrogates rejected).
size_t utf8_len(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  auto c1 = static_cast<unsigned char>(s[i + 1]);
  if (c1 < lo || c1 > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    auto ck = static_cast<unsigned char>(s[i + k]);
    if (ck < 0x80 || ck > 0xBF) return 0;
  }
  return n;
}

class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}
  bool done() const { return i_ >= s_.size(); }
  unsigned char peek() const {
    return done() ? 0 : static_cast<unsigned char>(s_[i_]);
  }
  size_t pos() const { return i_; }
  void advance(size_t n = 1) { i_ += n; }
  std::string_view rest() const { return s_.substr(i_); }
  std::string_view text() const { return s_; }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

// Dot-string: Atom *("." Atom), atext plus UTF-8.
bool scan_dot_string(Scanner& sc, std::string& out, std::string& error) {
  bool need_atom = true;
  while (!sc.done()) {
    unsigned char c = sc.peek();
    if (is_atext(c)) {
      out.push_back(static_cast<char>(c));
      sc.advance();
      need_atom = false;
    } else if (c >= 0x80) {
      size_t n = utf8_len(sc.text(), sc.pos());
      if (n == 0) {
        error = "malformed UTF-8 in local part";
        return false;
      }
      out.append(sc.text().substr(sc.pos(), n));
      sc.advance(n);
      need_atom = false;
    } else if (c == '.') {
      if (need_atom) {
        error = "empty atom in local part";
        return false;
      }
      out.push_back('.');
      sc.advance();
      need_atom = true;
    } else {
      break;
    }
  }
  if (need_atom) {
    error = out.empty() ? "missing local part" : "local part ends in a dot";
    return false;
  }
  return true;
}

// Quoted-string; `out` receives the content with quoted-pairs undone.
bool scan_quoted(Scanner& sc, std::string& out, std::string& error) {
  sc.advance();  // opening quote
  while (!sc.done()) {
    unsigned char c = sc.peek();
    if (c == '"') {
      sc.advance();
      return true;
    }
    if (c == '\\') {
      sc.advance();
      unsigned char q = sc.peek();
      if (sc.done() || q < 32 || q > 126) {
        error = "bad quoted pair in local part";
        return false;
      }
      out.push_back(static_cast<char>(q));
      sc.advance();
    } else if (c >= 32 && c <= 126) {
      out.push_back(static_cast<char>(c));
      sc.advance();
    } else if (c >= 0x80) {
      size_t n = utf8_len(sc.text(), sc.pos());
      if (n == 0) {
        error = "malformed UTF-8 in local part";
        return false;
      }
      out.append(sc.text().substr(sc.pos(), n));
      sc.advance(n);
    } else {
      error = "control character in quoted local part";
      return false;
    }
  }
  error = "unterminated quoted local part";
  return false;
}

// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str],
// or a U-label (UTF-8).  Or an address literal.
bool scan_domain(Scanner& sc, std::string& out, std::string& error) {
  if (sc.peek() == '[') {
    size_t start = sc.pos();
    while (!sc.done() && sc.peek() != ']') sc.advance();
    if (sc.done()) {
      error = "unterminated address literal";
      return false;
    }
    sc.advance();
    out.assign(sc.text().substr(start, sc.pos() - start));
    std::string inner = out.substr(1, out.size() - 2);
    unsigned char buf[16];
    if (inner.size() > 5 && lower_ascii(inner.substr(0, 5)) == "ipv6:") {
      if (inet_pton(AF_INET6, inner.c_str() + 5, buf) == 1) return true;
    } else if (inet_pton(AF_INET, inner.c_str(), buf) == 1) {
      return true;
    }
    error = "bad address literal " + out;
    return false;
  }
  size_t label_len = 0;
  bool last_hyphen = false;
  while (!sc.done()) {
    unsigned char c = sc.peek();
    if (is_alpha(c) || is_digit(c)) {
      out.push_back(static_cast<char>(c));
      sc.advance();
      ++label_len;
      last_hyphen = false;
    } else if (c == '-') {
      if (label_len == 0) {
        error = "domain label starts with a hyphen";
        return false;
      }
      out.push_back('-');
      sc.advance();
      ++label_len;
      last_hyphen = true;
    } else if (c >= 0x80) {
      size_t n = utf8_len(sc.text(), sc.pos());
      if (n == 0) {
        error = "malformed UTF-8 in domain";
        return false;
      }
      out.append(sc.text().substr(sc.pos(), n));
      sc.advance(n);
      label_len += n;
      last_hyphen = false;
    } else if (c == '.') {
      if (label_len == 0) {
        error = "empty label in domain";
        return false;
      }
      if (last_hyphen) {
        error = "domain label ends with a hyphen";
        return false;
      }
      out.push_back('.');
      sc.advance();
      label_len = 0;
    } else {
      break;
    }
    if (label_len > 63) {
      error = "domain label longer than 63 octets";
      return false;
    }
  }
  if (out.empty()) {
    error = "missing domain";
    return false;
  }
  if (label_len == 0) {
    error = "domain ends in a dot";
    return false;
  }
  if (last_hyphen) {
    error = "domain label ends with a hyphen";
    return false;
  }
  if (out.size() > kMaxDomain) {
    error = "domain longer than 255 octets";
    return false;
  }
  return true;
}

// A-d-l = At-domain *( "," At-domain ), each "@" Domain, then ":".
bool scan_source_route(Scanner& sc, std::string& error) {
  for (;;) {
    if (sc.peek() != '@') {
      error = "bad source route";
      return false;
    }
    sc.advance();
    std::string dom;
    if (!scan_domain(sc, dom, error)) {
      error = "bad source route: " + error;
      return false;
    }
    if (sc.peek() == ',') {
      sc.advance();
      continue;
    }
    if (sc.peek() == ':') {
      sc.advance();
      return true;
    }
    error = "bad source route";
    return false;
  }
}

bool plain_dot_string(std::string_view local) {
  if (local.empty() || local.front() == '.' || local.back() == '.') {
    return false;
  }
  for (size_t i = 0; i < local.size(); ++i) {
    auto c = static_cast<unsigned char>(local[i]);
    if (c == '.') {
      if (local[i + 1] == '.') return false;
    } else if (!is_atext(c) && c < 0x80) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string Mailbox::str() const {
  std::string out;
  if (plain_dot_string(local)) {
    out = local;
  } else {
    out.push_back('"');
    for (char c : local) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  if (!domain.empty()) {
    out.push_back('@');
    out += domain;
  }
  return out;
}

PathParse parse_path(std::string_view after_colon) {
  PathParse p;
  Scanner sc(after_colon);
  while (sc.peek() == ' ' || sc.peek() == '\t') sc.advance();
  if (sc.done()) {
    p.error = "missing address";
    return p;
  }
  size_t path_start = sc.pos();
  bool bracketed = sc.peek() == '<';

  // The null path and <postmaster>.
  if (bracketed) {
    sc.advance();
    if (sc.peek() == '>') {
      sc.advance();
      p.null_path = true;
    } else {
      std::string_view r = sc.rest();
      if (r.size() >= 11 && lower_ascii(r.substr(0, 11)) == "postmaster>") {
        sc.advance(11);
        p.box.local = std::string(r.substr(0, 10));
      }
    }
  }

  if (!p.null_path && p.box.local.empty()) {
    // [source route] local "@" domain
    if (bracketed && sc.peek() == '@') {
      if (!scan_source_route(sc, p.error)) return p;
      p.source_route = true;
    }
    if (sc.peek() == '"') {
      p.quoted_local = true;
      if (!scan_quoted(sc, p.box.local, p.error)) return p;
      if (p.box.local.empty()) {
        p.error = "empty quoted local part";
        return p;
      }
    } else if (!scan_dot_string(sc, p.box.local, p.error)) {
      return p;
    }
    if (p.box.local.size() > kMaxLocal) {
      p.error = "local part longer than 64 octets";
      return p;
    }
    if (sc.peek() != '@') {
      p.error = sc.done() || sc.peek() == '>' || sc.peek() == ' '
                    ? "missing @domain"
                    : "bad character in local part";
      return p;
    }
    sc.advance();
    if (!scan_domain(sc, p.box.domain, p.error)) return p;
    if (bracketed) {
      if (sc.peek() != '>') {
        p.error = sc.done() ? "missing >" : "bad character in domain";
        return p;
      }
      sc.advance();
    }
  }
  if (sc.pos() - path_start > kMaxPath) {
    p.error = "path longer than 256 octets";
    return p;
  }

  // Whatever follows must be separated by a blank (ESMTP parameters).
  if (!sc.done() && sc.peek() != ' ' && sc.peek() != '\t') {
    p.error = bracketed ? "text after >" : "bad character in address";
    return p;
  }
  while (sc.peek() == ' ' || sc.peek() == '\t') sc.advance();
  p.rest = std::string(sc.rest());
  p.ok = true;
  return p;
}

}  // namespace ferry::gw
