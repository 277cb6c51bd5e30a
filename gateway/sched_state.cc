// The scheduler's memory across restarts (see sched_state.h).

#include "gateway/sched_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gateway/files.h"

namespace ferry::gw {

namespace {

using json::Value;

int64_t us(SysTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             t.time_since_epoch())
      .count();
}

SysTime from_us(int64_t v) {
  return SysTime(std::chrono::duration_cast<SysTime::duration>(
      std::chrono::microseconds(v)));
}

Value opt_time(const std::optional<SysTime>& t) {
  return t ? Value(us(*t)) : Value();
}

Value opt_class(const std::optional<FailureClass>& c) {
  return c ? Value(std::string(to_string(*c))) : Value();
}

// g++ 12 warns that moving an integer Value into a vector may read the
// variant's other (string, array, object) members uninitialised: a false
// positive of its variant analysis, silenced here only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <class Seq>
Value times(const Seq& seq) {
  json::Array a;
  a.reserve(seq.size());
  for (SysTime t : seq) a.emplace_back(us(t));
  return a;
}
#pragma GCC diagnostic pop

// Reading: each helper sets `bad` to the member's name on a wrong type.
struct Reader {
  const Value& v;
  std::string& bad;

  bool ok(std::string_view key, Value::Type want) const {
    const Value& m = v[key];
    if (m.is_null() || m.type() == want) return true;
    if (bad.empty()) bad = std::string(key);
    return false;
  }
  void time(std::string_view key, SysTime& out) const {
    if (ok(key, Value::Type::integer) && v[key].is_integer())
      out = from_us(v[key].as_int());
  }
  void opt(std::string_view key, std::optional<SysTime>& out) const {
    if (ok(key, Value::Type::integer) && v[key].is_integer())
      out = from_us(v[key].as_int());
  }
  template <class T>
  void count(std::string_view key, T& out) const {
    if (ok(key, Value::Type::integer) && v[key].is_integer() &&
        v[key].as_int() >= 0)
      out = static_cast<T>(v[key].as_int());
  }
  void text(std::string_view key, std::string& out) const {
    if (ok(key, Value::Type::string)) out = v[key].as_string();
  }
  void failure(std::string_view key, std::optional<FailureClass>& out) const {
    if (!ok(key, Value::Type::string) || !v[key].is_string()) return;
    out = parse_failure_class(v[key].as_string());
    if (!out && bad.empty()) bad = std::string(key);
  }
  template <class Seq>
  void list(std::string_view key, Seq& out) const {
    if (!ok(key, Value::Type::array)) return;
    for (const Value& e : v[key].as_array()) {
      if (!e.is_integer()) {
        if (bad.empty()) bad = std::string(key);
        return;
      }
      out.push_back(from_us(e.as_int()));
    }
  }
};

}  // namespace

Value to_json(const SchedulerMemory& m) {
  Value doc;
  doc["version"] = 1;
  Value peers = json::Object{};
  for (const auto& [name, st] : m.peers) {
    Value p;
    json::Array routes;
    for (const RouteState& r : st.routes) {
      Value rv;
      rv["failures"] = r.failures;
      rv["not_before"] = us(r.not_before);
      rv["last_failure"] = opt_class(r.last_failure);
      rv["last_reply"] = r.last_reply;
      routes.push_back(std::move(rv));
    }
    p["routes"] = std::move(routes);
    p["failures"] = st.failures;
    p["not_before"] = us(st.not_before);
    p["last_failure"] = opt_class(st.last_failure);
    p["last_reply"] = st.last_reply;
    p["last_failure_time"] = us(st.last_failure_time);
    p["last_attempt"] = opt_time(st.last_attempt);
    p["last_connected_end"] = opt_time(st.last_connected_end);
    p["last_success"] = opt_time(st.last_success);
    p["connected_starts"] = times(st.connected_starts);
    p["missed"] = times(st.missed);
    p["windows_checked"] = opt_time(st.windows_checked);
    peers[name] = std::move(p);
  }
  doc["peers"] = std::move(peers);
  Value lines = json::Object{};
  for (const auto& [name, l] : m.lines) {
    Value lv;
    lv["down_since"] = opt_time(l.down_since);
    lv["not_before"] = us(l.not_before);
    lv["failures"] = l.failures;
    lv["last_failure"] = opt_class(l.last_failure);
    lv["not_responding"] = l.not_responding;
    lines[name] = std::move(lv);
  }
  doc["lines"] = std::move(lines);
  return doc;
}

bool from_json(const Value& v, SchedulerMemory& m, std::string& error) {
  m = SchedulerMemory{};
  if (!v.is_object() || v["version"].as_int() != 1) {
    error = "not a version 1 scheduler state";
    return false;
  }
  std::string bad;
  for (const auto& [name, pv] : v["peers"].as_object()) {
    PeerState st;
    Reader r{pv, bad};
    for (const Value& rv : pv["routes"].as_array()) {
      RouteState rs;
      Reader rr{rv, bad};
      rr.count("failures", rs.failures);
      rr.time("not_before", rs.not_before);
      rr.failure("last_failure", rs.last_failure);
      rr.text("last_reply", rs.last_reply);
      st.routes.push_back(std::move(rs));
    }
    r.count("failures", st.failures);
    r.time("not_before", st.not_before);
    r.failure("last_failure", st.last_failure);
    r.text("last_reply", st.last_reply);
    r.time("last_failure_time", st.last_failure_time);
    r.opt("last_attempt", st.last_attempt);
    r.opt("last_connected_end", st.last_connected_end);
    r.opt("last_success", st.last_success);
    r.list("connected_starts", st.connected_starts);
    r.list("missed", st.missed);
    r.opt("windows_checked", st.windows_checked);
    if (!bad.empty()) {
      error = "peer " + name + ": bad " + bad;
      return false;
    }
    m.peers[name] = std::move(st);
  }
  for (const auto& [name, lv] : v["lines"].as_object()) {
    LineState l;
    l.name = name;
    Reader r{lv, bad};
    r.opt("down_since", l.down_since);
    r.time("not_before", l.not_before);
    r.count("failures", l.failures);
    r.failure("last_failure", l.last_failure);
    r.count("not_responding", l.not_responding);
    if (!bad.empty()) {
      error = "line " + name + ": bad " + bad;
      return false;
    }
    m.lines[name] = std::move(l);
  }
  return true;
}

bool load_scheduler_memory(const std::string& path, SchedulerMemory& m,
                           std::string& error) {
  m = SchedulerMemory{};
  if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) return true;
  std::string text;
  if (!read_text_file(path, text, error)) return false;
  Value v;
  std::string why;
  if (!json::parse(text, v, why) || !from_json(v, m, why)) {
    error = path + ": " + why;
    m = SchedulerMemory{};
    return false;
  }
  return true;
}

bool save_scheduler_memory(const std::string& path, const std::string& text,
                           std::string& error) {
  std::string tmp = path + ".new";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = tmp + ": " + std::strerror(errno);
    return false;
  }
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = tmp + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    error = tmp + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    error = path + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace ferry::gw
