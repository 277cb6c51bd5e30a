#include "gateway/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace ferry::json {

namespace {

const Value kNull;
const std::string kEmptyString;
const Array kEmptyArray;
const Object kEmptyObject;
constexpr int kMaxDepth = 64;

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A recursive-descent parser over one buffer.
class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  bool run(Value& out, std::string& error) {
    skip_blanks();
    if (!value(out, 0)) {
      error = "offset " + std::to_string(pos_) + ": " + why_;
      return false;
    }
    skip_blanks();
    if (pos_ != s_.size()) {
      error = "offset " + std::to_string(pos_) + ": trailing bytes";
      return false;
    }
    return true;
  }

 private:
  bool fail(std::string why) {
    why_ = std::move(why);
    return false;
  }
  void skip_blanks() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' ||
                                s_[pos_] == '\r' || s_[pos_] == '\n')) {
      ++pos_;
    }
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) {
      return fail("expected '" + std::string(word) + "'");
    }
    pos_ += word.size();
    return true;
  }

  bool value(Value& out, int depth) {
    if (depth > kMaxDepth) return fail("nested too deeply");
    if (pos_ >= s_.size()) return fail("unexpected end of input");
    char c = s_[pos_];
    switch (c) {
      case 'n':
        out = Value();
        return literal("null");
      case 't':
        out = Value(true);
        return literal("true");
      case 'f':
        out = Value(false);
        return literal("false");
      case '"': {
        std::string str;
        if (!string(str)) return false;
        out = Value(std::move(str));
        return true;
      }
      case '[':
        return array(out, depth);
      case '{':
        return object(out, depth);
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return number(out);
        return fail("unexpected character");
    }
  }

  bool array(Value& out, int depth) {
    ++pos_;  // [
    Array a;
    skip_blanks();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      out = Value(std::move(a));
      return true;
    }
    for (;;) {
      skip_blanks();
      Value item;
      if (!value(item, depth + 1)) return false;
      a.push_back(std::move(item));
      skip_blanks();
      if (pos_ >= s_.size()) return fail("unexpected end of input");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        break;
      }
      return fail("expected ',' or ']'");
    }
    out = Value(std::move(a));
    return true;
  }

  bool object(Value& out, int depth) {
    ++pos_;  // {
    Object o;
    skip_blanks();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      out = Value(std::move(o));
      return true;
    }
    for (;;) {
      skip_blanks();
      if (pos_ >= s_.size() || s_[pos_] != '"') return fail("expected a key");
      std::string key;
      if (!string(key)) return false;
      skip_blanks();
      if (pos_ >= s_.size() || s_[pos_] != ':') return fail("expected ':'");
      ++pos_;
      skip_blanks();
      Value item;
      if (!value(item, depth + 1)) return false;
      o[std::move(key)] = std::move(item);  // a repeated key: the last wins
      skip_blanks();
      if (pos_ >= s_.size()) return fail("unexpected end of input");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == '}') {
        ++pos_;
        break;
      }
      return fail("expected ',' or '}'");
    }
    out = Value(std::move(o));
    return true;
  }

  bool hex4(uint32_t& cp) {
    if (pos_ + 4 > s_.size()) return fail("short \\u escape");
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      char h = s_[pos_++];
      cp <<= 4;
      if (h >= '0' && h <= '9') {
        cp |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        cp |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        cp |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return fail("bad \\u escape");
      }
    }
    return true;
  }

  bool string(std::string& out) {
    ++pos_;  // opening quote
    for (;;) {
      if (pos_ >= s_.size()) return fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[pos_++]);
      if (c == '"') return true;
      if (c < 0x20) return fail("control character in string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (pos_ >= s_.size()) return fail("unterminated string");
      char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by a low one.
            uint32_t lo;
            if (s_.substr(pos_, 2) != "\\u") return fail("lone surrogate");
            pos_ += 2;
            if (!hex4(lo)) return false;
            if (lo < 0xDC00 || lo > 0xDFFF) return fail("lone surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail("lone surrogate");
          }
          append_utf8(cp, out);
          break;
        }
        default:
          return fail("bad escape");
      }
    }
  }

  bool number(Value& out) {
    size_t start = pos_;
    bool integral = true;
    if (s_[pos_] == '-') ++pos_;
    if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') {
      return fail("bad number");
    }
    if (s_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      integral = false;
      ++pos_;
      size_t digits = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == digits) return fail("bad number");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      size_t digits = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == digits) return fail("bad number");
    }
    std::string text(s_.substr(start, pos_ - start));
    if (integral) {
      errno = 0;
      char* end = nullptr;
      long long v = std::strtoll(text.c_str(), &end, 10);
      if (errno == 0) {
        out = Value(static_cast<int64_t>(v));
        return true;
      }
      // Too large for 64 bits: keep it as a double.
    }
    out = Value(std::strtod(text.c_str(), nullptr));
    return true;
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string why_;
};

void write_to(const Value& v, std::string& out) {
  switch (v.type()) {
    case Value::Type::null:
      out += "null";
      break;
    case Value::Type::boolean:
      out += v.as_bool() ? "true" : "false";
      break;
    case Value::Type::integer:
      out += std::to_string(v.as_int());
      break;
    case Value::Type::number: {
      double d = v.as_double();
      if (!std::isfinite(d)) {
        out += "null";
        break;
      }
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", d);
      out += buf;
      break;
    }
    case Value::Type::string:
      write_string(v.as_string(), out);
      break;
    case Value::Type::array: {
      out += '[';
      bool first = true;
      for (const auto& item : v.as_array()) {
        if (!first) out += ',';
        first = false;
        write_to(item, out);
      }
      out += ']';
      break;
    }
    case Value::Type::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.as_object()) {
        if (!first) out += ',';
        first = false;
        write_string(key, out);
        out += ':';
        write_to(item, out);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

bool Value::as_bool(bool fallback) const {
  if (auto* b = std::get_if<bool>(&v_)) return *b;
  return fallback;
}

int64_t Value::as_int(int64_t fallback) const {
  if (auto* i = std::get_if<int64_t>(&v_)) return *i;
  if (auto* d = std::get_if<double>(&v_)) {
    if (std::isfinite(*d) && std::fabs(*d) < 9.2e18) {
      return static_cast<int64_t>(*d);
    }
  }
  return fallback;
}

double Value::as_double(double fallback) const {
  if (auto* d = std::get_if<double>(&v_)) return *d;
  if (auto* i = std::get_if<int64_t>(&v_)) return static_cast<double>(*i);
  return fallback;
}

const std::string& Value::as_string() const {
  if (auto* s = std::get_if<std::string>(&v_)) return *s;
  return kEmptyString;
}

const Array& Value::as_array() const {
  if (auto* a = std::get_if<Array>(&v_)) return *a;
  return kEmptyArray;
}

const Object& Value::as_object() const {
  if (auto* o = std::get_if<Object>(&v_)) return *o;
  return kEmptyObject;
}

Array& Value::array() {
  if (!is_array()) v_ = Array{};
  return std::get<Array>(v_);
}

Object& Value::object() {
  if (!is_object()) v_ = Object{};
  return std::get<Object>(v_);
}

const Value& Value::operator[](std::string_view key) const {
  const auto& o = as_object();
  auto it = o.find(key);
  return it == o.end() ? kNull : it->second;
}

Value& Value::operator[](const std::string& key) { return object()[key]; }

bool Value::has(std::string_view key) const {
  return as_object().find(key) != as_object().end();
}

void write_string(std::string_view s, std::string& out) {
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

std::string write(const Value& v) {
  std::string out;
  write_to(v, out);
  return out;
}

bool parse(std::string_view text, Value& out, std::string& error) {
  return Parser(text).run(out, error);
}

}  // namespace ferry::json
