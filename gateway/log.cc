#include "gateway/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace ferry::log {
namespace {

std::mutex g_mutex;
std::string g_program = "ferry";

}  // namespace

void set_program(std::string_view name) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_program = std::string(name);
}

void line(std::string_view id, std::string_view text) {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[64];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(ms));

  std::string out;
  out.reserve(64 + id.size() + text.size());
  out += stamp;
  out += ' ';
  std::lock_guard<std::mutex> lock(g_mutex);
  out += g_program;
  out += '[';
  out += std::to_string(::getpid());
  out += "]: ";
  out += id;
  out += ": ";
  out += text;
  out += '\n';
  // One write per line so concurrent processes sharing stderr do not
  // interleave inside a line.
  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = ::write(STDERR_FILENO, out.data() + off, out.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

std::string quote(std::string_view value) {
  bool plain = !value.empty();
  for (unsigned char c : value) {
    if (c <= ' ' || c == '"' || c == '\\' || c >= 0x7f) {
      plain = false;
      break;
    }
  }
  if (plain) return std::string(value);
  std::string out = "\"";
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < ' ' || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  return out;
}

}  // namespace ferry::log
