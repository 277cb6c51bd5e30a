// A small JSON value, writer and parser for the control socket.
//
// The control protocol sends one JSON document per line, so the writer
// never emits a raw newline (it escapes every control character) and the
// parser takes one line of bytes and returns a value.  Numbers are kept as
// signed 64-bit integers when they are written without a fraction or an
// exponent (queue sizes, byte counts and times must not lose precision)
// and as doubles otherwise.  Objects keep their keys sorted (std::map), so
// output is stable and easy to compare in tests.
//
// Why our own: the protocol needs a few hundred lines of it, and the
// project takes no dependency outside Debian's C++ packages for that.
//
// Errors: parse() returns false and names the byte offset and the cause;
// it never throws.  Input must be UTF-8; \u escapes (with surrogate
// pairs) become UTF-8.  Nesting deeper than 64 levels is refused.
//
// Concurrency: plain values, no shared state.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ferry::json {

class Value;
using Array = std::vector<Value>;
using Object = std::map<std::string, Value, std::less<>>;

class Value {
 public:
  enum class Type { null, boolean, integer, number, string, array, object };

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(static_cast<int64_t>(i)) {}
  Value(unsigned i) : v_(static_cast<int64_t>(i)) {}
  Value(long i) : v_(static_cast<int64_t>(i)) {}
  Value(unsigned long i) : v_(static_cast<int64_t>(i)) {}
  Value(long long i) : v_(static_cast<int64_t>(i)) {}
  Value(unsigned long long i) : v_(static_cast<int64_t>(i)) {}
  Value(double d) : v_(d) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(std::string_view s) : v_(std::string(s)) {}
  Value(Array a) : v_(std::move(a)) {}
  Value(Object o) : v_(std::move(o)) {}

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_null() const { return type() == Type::null; }
  bool is_bool() const { return type() == Type::boolean; }
  bool is_integer() const { return type() == Type::integer; }
  bool is_number() const {
    return type() == Type::integer || type() == Type::number;
  }
  bool is_string() const { return type() == Type::string; }
  bool is_array() const { return type() == Type::array; }
  bool is_object() const { return type() == Type::object; }

  // Accessors with a fallback for a missing or differently typed value,
  // so request handlers read optional arguments in one line.
  bool as_bool(bool fallback = false) const;
  int64_t as_int(int64_t fallback = 0) const;  // doubles are truncated
  double as_double(double fallback = 0) const;
  const std::string& as_string() const;  // "" unless a string
  const Array& as_array() const;         // empty unless an array
  const Object& as_object() const;       // empty unless an object

  // Mutable access; converts a null value to the container first.
  Array& array();
  Object& object();

  // Object member, or a null value when absent (or not an object).
  const Value& operator[](std::string_view key) const;
  // Object member, created (null) when absent.
  Value& operator[](const std::string& key);
  bool has(std::string_view key) const;

  bool operator==(const Value& o) const { return v_ == o.v_; }

 private:
  std::variant<std::monostate, bool, int64_t, double, std::string, Array,
               Object>
      v_;
};

// Compact, one line, keys in sorted order.  Non-finite doubles become null.
std::string write(const Value& v);

// Appends `s` as a JSON string literal (with quotes) to `out`.
void write_string(std::string_view s, std::string& out);

// Parses exactly one JSON value (surrounding blanks allowed).  On failure
// returns false with `error` such as "offset 12: expected ':'".
bool parse(std::string_view text, Value& out, std::string& error);

}  // namespace ferry::json
