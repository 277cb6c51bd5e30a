#include "gateway/schedule.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <type_traits>

#include "modem/error.h"

namespace ferry::gw {
namespace {

using std::chrono::duration_cast;
using std::chrono::minutes;
using std::chrono::seconds;

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(trim(s.substr(start, i - start)));
      start = i + 1;
    }
  }
  return out;
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() &&
           (std::isspace(static_cast<unsigned char>(s[i])) || s[i] == ','))
      ++i;
    size_t start = i;
    while (i < s.size() &&
           !(std::isspace(static_cast<unsigned char>(s[i])) || s[i] == ','))
      ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

int64_t epoch_seconds(SysTime t) {
  return duration_cast<seconds>(t.time_since_epoch()).count() -
         (t.time_since_epoch() < SysClock::duration::zero() &&
                  t.time_since_epoch() % seconds(1) !=
                      SysClock::duration::zero()
              ? 1
              : 0);
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// The start of the minute that holds `t`.
SysTime floor_minute(SysTime t) {
  return SysTime(duration_cast<SysClock::duration>(
      minutes(floor_div(epoch_seconds(t), 60))));
}

// "HH:MM" -> minutes; allows 24:00 when allow_end.
std::optional<int> parse_hhmm(std::string_view s, bool allow_end) {
  s = trim(s);
  size_t colon = s.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 2 ||
      s.size() != colon + 3)
    return std::nullopt;
  int h = 0, m = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == colon) continue;
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
  }
  h = std::stoi(std::string(s.substr(0, colon)));
  m = std::stoi(std::string(s.substr(colon + 1)));
  if (m > 59) return std::nullopt;
  if (h < 24) return h * 60 + m;
  if (allow_end && h == 24 && m == 0) return 1440;
  return std::nullopt;
}

std::optional<int> parse_day(std::string_view s) {
  static constexpr std::string_view kDays[] = {"mon", "tue", "wed", "thu",
                                               "fri", "sat", "sun"};
  std::string l = lower(s);
  for (int i = 0; i < 7; ++i)
    if (l == kDays[i]) return i;
  return std::nullopt;
}

std::string hhmm(int minute_of_day) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d", minute_of_day / 60,
                minute_of_day % 60);
  return buf;
}

// Local wall-clock instant (`delta` minutes from the minute holding `t`)
// back to UTC, correcting for an offset change in between (DST).  In a
// spring-forward gap the uncorrected instant is kept.
SysTime local_shift(const TimeZone& tz, SysTime t, int64_t delta) {
  SysTime base = floor_minute(t);
  SysTime cand = base + minutes(delta);
  auto off0 = tz.offset_at(t);
  auto off1 = tz.offset_at(cand);
  if (off1 != off0) {
    SysTime adj = cand - (off1 - off0);
    if (tz.offset_at(adj) == off1) return adj;
  }
  return cand;
}

uint32_t be32(const std::string& s, size_t p) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(s[p])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(s[p + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(s[p + 2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(s[p + 3]));
}

}  // namespace

// ---- TimeZone ----

std::optional<TimeZone> TimeZone::parse(std::string_view spec,
                                        std::string& error,
                                        const std::string& zoneinfo_dir) {
  spec = trim(spec);
  TimeZone tz;
  std::string l = lower(spec);
  if (l == "utc" || l == "gmt" || l == "z") return tz;

  // A fixed offset: +HH:MM, -HH:MM, +HH.
  if (!spec.empty() && (spec[0] == '+' || spec[0] == '-')) {
    std::string_view rest = spec.substr(1);
    std::optional<int> m;
    if (rest.size() == 2 && std::isdigit(static_cast<unsigned char>(rest[0])) &&
        std::isdigit(static_cast<unsigned char>(rest[1])))
      m = std::stoi(std::string(rest)) * 60;
    else
      m = parse_hhmm(rest, false);
    if (!m || *m > 14 * 60) {
      error = "zone \"" + std::string(spec) +
              "\": expected UTC, +HH:MM, -HH:MM or a tz name";
      return std::nullopt;
    }
    tz.base_offset_ = (spec[0] == '-' ? -1 : 1) * *m * 60;
    tz.name_ = std::string(spec);
    return tz;
  }

  // A tz database name: read the TZif file (RFC 8536).
  bool ok_name = !spec.empty() && spec.find("..") == std::string_view::npos &&
                 spec[0] != '/';
  for (char c : spec)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' ||
          c == '-' || c == '+'))
      ok_name = false;
  if (!ok_name) {
    error = "zone \"" + std::string(spec) +
            "\": expected UTC, +HH:MM, -HH:MM or a tz name";
    return std::nullopt;
  }
  std::string path = zoneinfo_dir + "/" + std::string(spec);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "zone \"" + std::string(spec) + "\": cannot read " + path;
    return std::nullopt;
  }
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  auto bad = [&] {
    error =
        "zone \"" + std::string(spec) + "\": " + path + " is not a TZif file";
    return std::nullopt;
  };
  if (data.size() < 44 || data.compare(0, 4, "TZif") != 0) return bad();

  // The version 1 block uses 4-byte times; version 2+ repeats the data
  // with 8-byte times after it, which is the one we read.
  size_t hdr = 0;
  size_t tsize = 4;
  auto block_size = [&](size_t h, size_t ts) {
    uint32_t isut = be32(data, h + 20), isstd = be32(data, h + 24),
             leap = be32(data, h + 28), timecnt = be32(data, h + 32),
             typecnt = be32(data, h + 36), charcnt = be32(data, h + 40);
    return static_cast<size_t>(timecnt) * (ts + 1) + typecnt * 6ull + charcnt +
           leap * (ts + 4) + isstd + isut;
  };
  if (data[4] >= '2') {
    size_t second = 44 + block_size(0, 4);
    if (data.size() < second + 44 || data.compare(second, 4, "TZif") != 0)
      return bad();
    hdr = second;
    tsize = 8;
  }
  if (data.size() < hdr + 44 + block_size(hdr, tsize)) return bad();
  uint32_t timecnt = be32(data, hdr + 32), typecnt = be32(data, hdr + 36);
  if (typecnt == 0) return bad();
  size_t times = hdr + 44;
  size_t idx = times + timecnt * tsize;
  size_t types = idx + timecnt;
  auto type_offset = [&](size_t i) {
    return static_cast<int32_t>(be32(data, types + 6 * i));
  };
  tz.base_offset_ = type_offset(0);
  for (uint32_t i = 0; i < timecnt; ++i) {
    int64_t when;
    if (tsize == 8)
      when = static_cast<int64_t>(
          (static_cast<uint64_t>(be32(data, times + 8 * i)) << 32) |
          be32(data, times + 8 * i + 4));
    else
      when = static_cast<int32_t>(be32(data, times + 4 * i));
    size_t type = static_cast<unsigned char>(data[idx + i]);
    if (type >= typecnt) return bad();
    tz.transitions_.emplace_back(when, type_offset(type));
  }
  tz.name_ = std::string(spec);
  return tz;
}

std::chrono::seconds TimeZone::offset_at(SysTime t) const {
  if (transitions_.empty()) return seconds(base_offset_);
  int64_t s = epoch_seconds(t);
  auto it =
      std::upper_bound(transitions_.begin(), transitions_.end(), s,
                       [](int64_t v, const std::pair<int64_t, int32_t>& e) {
                         return v < e.first;
                       });
  if (it == transitions_.begin()) return seconds(base_offset_);
  return seconds(std::prev(it)->second);
}

LocalTime to_local(const TimeZone& tz, SysTime t) {
  int64_t s = epoch_seconds(t) + tz.offset_at(t).count();
  LocalTime lt;
  lt.days = floor_div(s, 86400);
  lt.minute = static_cast<int>((s - lt.days * 86400) / 60);
  // 1970-01-01 was a Thursday (3 when Monday is 0).
  lt.weekday = static_cast<int>(((lt.days % 7) + 7 + 3) % 7);
  return lt;
}

std::string format_local(const TimeZone& tz, SysTime t) {
  static constexpr const char* kDays[] = {"Mon", "Tue", "Wed", "Thu",
                                          "Fri", "Sat", "Sun"};
  LocalTime lt = to_local(tz, t);
  return std::string(kDays[lt.weekday]) + " " + hhmm(lt.minute);
}

// ---- CallWindows ----

std::optional<CallWindows> CallWindows::parse(std::string_view spec,
                                              std::string& error) {
  CallWindows w;
  w.spec_ = std::string(trim(spec));
  std::string l = lower(w.spec_);
  if (l == "always") return w;
  if (l == "never") return never();

  std::vector<std::pair<int, int>> raw;
  for (std::string_view item : split(spec, ',')) {
    auto fail = [&](const std::string& why) {
      error = "call window \"" + std::string(item) + "\": " + why;
      return std::nullopt;
    };
    std::vector<std::string_view> parts = words(item);
    if (parts.empty() || parts.size() > 2)
      return fail("expected [DAYS] HH:MM-HH:MM, e.g. Mon-Fri 18:00-07:30");
    int first = 0, last = 6;
    if (parts.size() == 2 && lower(parts[0]) != "daily") {
      std::string_view d = parts[0];
      size_t dash = d.find('-');
      auto a = parse_day(d.substr(0, dash));
      auto b =
          dash == std::string_view::npos ? a : parse_day(d.substr(dash + 1));
      if (!a || !b) return fail("unknown day; use Mon..Sun or Mon-Fri");
      first = *a;
      last = *b;
    }
    std::string_view times = parts.back();
    size_t dash = times.find('-');
    if (dash == std::string_view::npos) return fail("expected HH:MM-HH:MM");
    auto from = parse_hhmm(times.substr(0, dash), false);
    auto to = parse_hhmm(times.substr(dash + 1), true);
    if (!from || !to) return fail("bad time; use HH:MM (00:00 to 24:00)");
    int len = *to > *from ? *to - *from : *to + 1440 - *from;
    for (int d = first;; d = (d + 1) % 7) {
      int begin = d * 1440 + *from;
      int end = begin + len;
      if (end <= kWeek) {
        raw.emplace_back(begin, end);
      } else {
        raw.emplace_back(begin, kWeek);
        raw.emplace_back(0, end - kWeek);
      }
      if (d == last) break;
    }
  }

  // Sort and merge touching spans.
  std::sort(raw.begin(), raw.end());
  w.spans_.clear();
  for (auto& s : raw) {
    if (!w.spans_.empty() && s.first <= w.spans_.back().second)
      w.spans_.back().second = std::max(w.spans_.back().second, s.second);
    else
      w.spans_.push_back(s);
  }
  return w;
}

CallWindows CallWindows::never() {
  CallWindows w;
  w.spans_.clear();
  w.spec_ = "never";
  return w;
}

bool CallWindows::always() const {
  return spans_.size() == 1 && spans_[0].first == 0 &&
         spans_[0].second == kWeek;
}

bool CallWindows::open_at(const TimeZone& tz, SysTime t) const {
  LocalTime lt = to_local(tz, t);
  int m = lt.weekday * 1440 + lt.minute;
  for (auto& s : spans_)
    if (m >= s.first && m < s.second) return true;
  return false;
}

std::optional<SysTime> CallWindows::next_open(const TimeZone& tz,
                                              SysTime t) const {
  if (spans_.empty()) return std::nullopt;
  if (open_at(tz, t)) return t;
  LocalTime lt = to_local(tz, t);
  int m = lt.weekday * 1440 + lt.minute;
  int best = kWeek + 1;
  for (auto& s : spans_) {
    int d = ((s.first - m) % kWeek + kWeek) % kWeek;
    if (d > 0) best = std::min(best, d);
  }
  return local_shift(tz, t, best);
}

int CallWindows::stretch_ending_at(int end) const {
  for (auto& s : spans_) {
    if (s.second != end) continue;
    int len = s.second - s.first;
    // A span starting at Monday 00:00 continues one ending at kWeek.
    if (s.first == 0 && spans_.back().second == kWeek && spans_.size() > 1)
      len += spans_.back().second - spans_.back().first;
    return len;
  }
  return 0;
}

std::optional<SysTime> CallWindows::next_close(const TimeZone& tz,
                                               SysTime t) const {
  if (spans_.empty() || always()) return std::nullopt;
  LocalTime lt = to_local(tz, t);
  int m = lt.weekday * 1440 + lt.minute;
  bool wraps = spans_.front().first == 0;
  int best = kWeek + 1;
  for (auto& s : spans_) {
    if (s.second == kWeek && wraps) continue;  // continues past Sunday
    int d = ((s.second - m) % kWeek + kWeek) % kWeek;
    if (d == 0) d = kWeek;
    best = std::min(best, d);
  }
  return local_shift(tz, t, best);
}

SysTime CallWindows::opened_before(const TimeZone& tz, SysTime close) const {
  LocalTime lt = to_local(tz, close);
  int end = lt.weekday * 1440 + lt.minute;
  if (end == 0) end = kWeek;
  int len = stretch_ending_at(end);
  if (len == 0) len = stretch_ending_at(lt.weekday * 1440 + lt.minute);
  return close - minutes(len);
}

// ---- Value parsers ----

std::optional<std::chrono::seconds> parse_duration(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == start || i - start > 9) return std::nullopt;
    int64_t n = std::stoll(std::string(s.substr(start, i - start)));
    int64_t unit = 1;
    if (i < s.size()) {
      switch (std::tolower(static_cast<unsigned char>(s[i]))) {
        case 's':
          unit = 1;
          break;
        case 'm':
          unit = 60;
          break;
        case 'h':
          unit = 3600;
          break;
        case 'd':
          unit = 86400;
          break;
        case 'w':
          unit = 7 * 86400;
          break;
        default:
          return std::nullopt;
      }
      ++i;
    } else if (start != 0) {
      return std::nullopt;  // "1h30" is ambiguous
    }
    total += n * unit;
  }
  return seconds(total);
}

std::optional<uint64_t> parse_size(std::string_view s) {
  s = trim(s);
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 15) return std::nullopt;
  uint64_t n = std::stoull(std::string(s.substr(0, i)));
  std::string unit = lower(trim(s.substr(i)));
  if (unit.empty() || unit == "b") return n;
  if (unit == "k" || unit == "kb" || unit == "kib") return n << 10;
  if (unit == "m" || unit == "mb" || unit == "mib") return n << 20;
  if (unit == "g" || unit == "gb" || unit == "gib") return n << 30;
  return std::nullopt;
}

std::optional<std::vector<int>> parse_poll_times(std::string_view s,
                                                 std::string& error) {
  std::vector<int> out;
  for (std::string_view w : words(s)) {
    auto m = parse_hhmm(w, false);
    if (!m) {
      error = "poll time \"" + std::string(w) + "\": expected HH:MM";
      return std::nullopt;
    }
    out.push_back(*m);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string format_duration(std::chrono::seconds d) {
  int64_t s = d.count();
  if (s <= 0) return "0s";
  std::string out;
  auto put = [&](int64_t unit, char c) {
    if (s >= unit) {
      out += std::to_string(s / unit) + c;
      s %= unit;
    }
  };
  put(86400, 'd');
  put(3600, 'h');
  put(60, 'm');
  // Seconds only matter for short waits.
  if (out.empty() || (d.count() < 600 && s > 0)) out += std::to_string(s) + 's';
  return out;
}

std::string format_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes < 1024)
    std::snprintf(buf, sizeof buf, "%llu bytes",
                  static_cast<unsigned long long>(bytes));
  else if (bytes < (1u << 20))
    std::snprintf(buf, sizeof buf, "%llu KiB",
                  static_cast<unsigned long long>((bytes + 512) >> 10));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB",
                  static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// ---- Failures ----

namespace {
constexpr std::string_view kFailureNames[kFailureClasses] = {
    "busy",
    "no_answer",
    "no_dialtone",
    "no_carrier",
    "modem_not_responding",
    "delayed",
    "blacklisted",
    "port_locked",
    "port_unavailable",
    "auth_failed",
    "config_error",
    "protocol_error",
    "dropped"};

// How a person reads each class in a reason string.
constexpr std::string_view kFailureWords[kFailureClasses] = {
    "busy",
    "no answer",
    "NO DIALTONE",
    "no carrier",
    "modem not responding",
    "DELAYED by the modem",
    "BLACKLISTED by the modem",
    "port locked by another program",
    "port unavailable",
    "authentication failure",
    "configuration error",
    "protocol error",
    "line dropped"};
}  // namespace

std::string_view to_string(FailureClass c) {
  return kFailureNames[static_cast<int>(c)];
}

std::optional<FailureClass> parse_failure_class(std::string_view s) {
  for (int i = 0; i < kFailureClasses; ++i)
    if (kFailureNames[i] == s) return static_cast<FailureClass>(i);
  return std::nullopt;
}

std::optional<FailureClass> classify_modem_error(std::error_code ec) {
  using modem::ModemErrc;
  if (!ec || ec.category() != modem::modem_category()) return std::nullopt;
  switch (static_cast<ModemErrc>(ec.value())) {
    case ModemErrc::busy:
      return FailureClass::busy;
    // A person or a fax answered: like nobody answering, try later.
    case ModemErrc::no_answer:
    case ModemErrc::voice:
      return FailureClass::no_answer;
    case ModemErrc::no_dialtone:
      return FailureClass::no_dialtone;
    case ModemErrc::no_carrier:
    case ModemErrc::call_failed:
      return FailureClass::no_carrier;
    case ModemErrc::blacklisted:
      return FailureClass::blacklisted;
    case ModemErrc::delayed:
      return FailureClass::delayed;
    // ERROR to a command and a modem that will not hang up are treated as
    // a sick modem: reset it, and after N in a row a person is needed.
    case ModemErrc::modem_error:
    case ModemErrc::hangup_failed:
    case ModemErrc::not_responding:
      return FailureClass::modem_not_responding;
    case ModemErrc::port_unavailable:
    case ModemErrc::port_io:
      return FailureClass::port_unavailable;
    case ModemErrc::port_locked:
      return FailureClass::port_locked;
    case ModemErrc::carrier_lost:
    case ModemErrc::not_connected:
      return FailureClass::dropped;
    case ModemErrc::no_call:
    case ModemErrc::call_abandoned:
      return std::nullopt;
  }
  return std::nullopt;
}

FailureScope scope_of(FailureClass c) {
  switch (c) {
    case FailureClass::busy:
    case FailureClass::no_answer:
    case FailureClass::no_carrier:
    case FailureClass::delayed:
    case FailureClass::blacklisted:
      return FailureScope::route;
    case FailureClass::no_dialtone:
    case FailureClass::modem_not_responding:
    case FailureClass::port_locked:
    case FailureClass::port_unavailable:
      return FailureScope::line;
    case FailureClass::auth_failed:
    case FailureClass::config_error:
      return FailureScope::stop;
    case FailureClass::protocol_error:
    case FailureClass::dropped:
      return FailureScope::peer;
  }
  return FailureScope::peer;
}

// Defaults: a busy line frees up in minutes; nobody answering is more
// likely a switched-off modem; a dropped line is usually worth an early
// redial (the transfer resumes).
RetryPolicy::RetryPolicy() {
  auto set = [&](FailureClass c, seconds s) { base[static_cast<int>(c)] = s; };
  set(FailureClass::busy, minutes(3));
  set(FailureClass::no_answer, minutes(15));
  set(FailureClass::no_dialtone, minutes(5));
  set(FailureClass::no_carrier, minutes(5));
  set(FailureClass::modem_not_responding, minutes(1));
  set(FailureClass::delayed, minutes(10));
  set(FailureClass::blacklisted, minutes(60));
  set(FailureClass::port_locked, minutes(2));
  set(FailureClass::port_unavailable, minutes(5));
  set(FailureClass::auth_failed, seconds(0));
  set(FailureClass::config_error, seconds(0));
  set(FailureClass::protocol_error, minutes(15));
  set(FailureClass::dropped, minutes(1));
}

QueueSummary summarize(const queue::RouteStats& s) {
  QueueSummary q;
  q.messages = s.messages;
  q.bytes = s.bytes;
  if (s.messages > 0) q.oldest = s.oldest;
  q.max_priority = s.max_priority;
  return q;
}

// ---- Decisions ----

namespace {

// "14:05" when `t` is on the same local day as `now`, else "Tue 14:05".
std::string when(const TimeZone& tz, SysTime now, SysTime t) {
  LocalTime a = to_local(tz, now), b = to_local(tz, t);
  if (a.days == b.days) return hhmm(b.minute);
  return format_local(tz, t);
}

bool route_ready(const PeerState& st, size_t i, SysTime t) {
  return i >= st.routes.size() || st.routes[i].not_before <= t;
}

size_t route_count(const PeerSchedule& cfg) {
  return std::max<size_t>(1, cfg.routes.size());
}

// The latest poll time at or before `t` (within the last day).
std::optional<SysTime> last_poll(const PeerSchedule& cfg, SysTime t) {
  const auto& polls = cfg.triggers.poll_times;
  if (polls.empty()) return std::nullopt;
  LocalTime lt = to_local(cfg.zone, t);
  int best = -1;
  for (int p : polls)
    if (p <= lt.minute) best = p;
  int64_t back = best >= 0 ? lt.minute - best : lt.minute + 1440 - polls.back();
  return local_shift(cfg.zone, t, -back);
}

std::optional<SysTime> next_poll(const PeerSchedule& cfg, SysTime t) {
  const auto& polls = cfg.triggers.poll_times;
  if (polls.empty()) return std::nullopt;
  LocalTime lt = to_local(cfg.zone, t);
  for (int p : polls)
    if (p > lt.minute) return local_shift(cfg.zone, t, p - lt.minute);
  return local_shift(cfg.zone, t, polls.front() + 1440 - lt.minute);
}

bool is_urgent(const PeerSchedule& cfg, const QueueSummary& q) {
  return q.messages > 0 && cfg.triggers.urgent_priority > 0 &&
         q.max_priority >= cfg.triggers.urgent_priority;
}

// Why a call is worth making at `t`, or nullopt.
std::optional<std::string> trigger_at(const PeerSchedule& cfg,
                                      const PeerState& st,
                                      const QueueSummary& q, SysTime t) {
  const Triggers& tr = cfg.triggers;
  if (q.messages > 0) {
    if (is_urgent(cfg, q))
      return "urgent message queued (priority " +
             std::to_string(q.max_priority) + ")";
    if (tr.min_messages > 0 && q.messages >= tr.min_messages)
      return std::to_string(q.messages) +
             (q.messages == 1 ? " message" : " messages") +
             " queued (threshold " + std::to_string(tr.min_messages) + ")";
    if (tr.min_bytes > 0 && q.bytes >= tr.min_bytes)
      return format_bytes(q.bytes) + " queued (threshold " +
             format_bytes(tr.min_bytes) + ")";
    if (tr.max_age.count() > 0 && q.oldest && t - *q.oldest >= tr.max_age)
      return "oldest message waiting " +
             format_duration(duration_cast<seconds>(t - *q.oldest)) +
             " (limit " + format_duration(tr.max_age) + ")";
  }
  if (auto p = last_poll(cfg, t)) {
    if (!st.last_success || *st.last_success < *p)
      return "poll time " + hhmm(to_local(cfg.zone, *p).minute);
  }
  return std::nullopt;
}

// The next instant after `t` at which a trigger could start to hold with
// the queue unchanged.
std::optional<SysTime> next_trigger(const PeerSchedule& cfg,
                                    const QueueSummary& q, SysTime t) {
  std::optional<SysTime> best = next_poll(cfg, t);
  if (q.messages > 0 && q.oldest && cfg.triggers.max_age.count() > 0) {
    SysTime a = *q.oldest + cfg.triggers.max_age;
    if (a > t && (!best || a < *best)) best = a;
  }
  return best;
}

std::string threshold_text(const PeerSchedule& cfg, const QueueSummary& q) {
  const Triggers& tr = cfg.triggers;
  if (q.messages == 0) return "nothing queued";
  std::string s = "below threshold: " + std::to_string(q.messages) +
                  (q.messages == 1 ? " message, " : " messages, ") +
                  format_bytes(q.bytes) + " (threshold ";
  std::string th;
  if (tr.min_messages > 0) th = std::to_string(tr.min_messages) + " messages";
  if (tr.min_bytes > 0)
    th += (th.empty() ? "" : " or ") + format_bytes(tr.min_bytes);
  if (tr.max_age.count() > 0)
    th +=
        (th.empty() ? "oldest " : ", or oldest ") + format_duration(tr.max_age);
  if (th.empty()) th = "none: only urgent mail and polls call";
  return s + th + ")";
}

struct Gate {
  SysTime until{};  // when it opens (<= t: open)
  std::string why;  // filled when closed
  bool never = false;
};

// The first gate closed at `t`, or an open gate (until <= t).
Gate gates_at(const PeerSchedule& cfg, const PeerState& st,
              const LineState& line, bool urgent, SysTime t, SysTime now) {
  const TimeZone& tz = cfg.zone;
  Gate g;
  g.until = t;

  // The modem line: NO DIALTONE and friends hold every peer.
  if (line.not_before > t) {
    g.until = line.not_before;
    if (line.down_since)
      g.why = "line down since " + when(tz, now, *line.down_since) +
              " (NO DIALTONE); next try " + when(tz, now, line.not_before);
    else
      g.why =
          "waiting for " + line.name + " after " +
          std::string(line.last_failure
                          ? kFailureWords[static_cast<int>(*line.last_failure)]
                          : "a failure") +
          " until " + when(tz, now, line.not_before);
    return g;
  }

  // This peer's own backoff (dropped calls, protocol errors).
  if (st.not_before > t) {
    g.until = st.not_before;
    g.why = "backing off after " +
            std::string(st.last_failure
                            ? kFailureWords[static_cast<int>(*st.last_failure)]
                            : "a failure") +
            " until " + when(tz, now, st.not_before);
    return g;
  }

  // Numbers and routes: one ready is enough.
  size_t n = route_count(cfg);
  bool any = false;
  size_t soonest = 0;
  for (size_t i = 0; i < n; ++i) {
    if (route_ready(st, i, t)) {
      any = true;
      break;
    }
    if (st.routes[i].not_before < st.routes[soonest].not_before) soonest = i;
  }
  if (!any) {
    const RouteState& rs = st.routes[soonest];
    g.until = rs.not_before;
    std::string what =
        rs.last_failure
            ? std::string(kFailureWords[static_cast<int>(*rs.last_failure)])
            : "a failure";
    if (n == 1)
      g.why = "backing off after " + what + " until " +
              when(tz, now, rs.not_before);
    else
      g.why = "all " + std::to_string(n) + " routes backing off; next " +
              cfg.routes[soonest] + " (after " + what + ") at " +
              when(tz, now, rs.not_before);
    return g;
  }

  // Limits.
  if (st.last_connected_end && cfg.limits.min_gap.count() > 0 &&
      *st.last_connected_end + cfg.limits.min_gap > t) {
    g.until = *st.last_connected_end + cfg.limits.min_gap;
    g.why = "minimum gap of " + format_duration(cfg.limits.min_gap) +
            " between calls until " + when(tz, now, g.until);
    return g;
  }
  if (cfg.limits.max_calls_per_day > 0) {
    std::vector<SysTime> recent;
    for (SysTime s : st.connected_starts)
      if (s > t - std::chrono::hours(24)) recent.push_back(s);
    if (recent.size() >= cfg.limits.max_calls_per_day) {
      g.until = recent[recent.size() - cfg.limits.max_calls_per_day] +
                std::chrono::hours(24);
      g.why = "call limit reached: " + std::to_string(recent.size()) +
              " calls in 24 h (limit " +
              std::to_string(cfg.limits.max_calls_per_day) + ") until " +
              when(tz, now, g.until);
      return g;
    }
  }

  // The call windows (urgent mail may bypass them).
  if (!(urgent && cfg.triggers.urgent_ignores_window) &&
      !cfg.windows.open_at(tz, t)) {
    auto open = cfg.windows.next_open(tz, t);
    if (!open) {
      g.never = true;
      g.until = SysTime::max();
      g.why = "call windows are \"never\"";
      return g;
    }
    g.until = *open;
    g.why = "outside the call window until " + format_local(tz, *open);
    return g;
  }
  return g;
}

// The earliest instant >= t at which every gate is open.
std::optional<SysTime> all_open_from(const PeerSchedule& cfg,
                                     const PeerState& st, const LineState& line,
                                     bool urgent, SysTime t) {
  for (int i = 0; i < 32; ++i) {
    Gate g = gates_at(cfg, st, line, urgent, t, t);
    if (g.never) return std::nullopt;
    if (g.until <= t) return t;
    t = g.until;
  }
  return t;
}

}  // namespace

Decision decide(const PeerSchedule& cfg, const PeerState& st,
                const LineState& line, const QueueSummary& q, SysTime now) {
  Decision d;
  const TimeZone& tz = cfg.zone;

  // States only a person clears.
  if (st.stopped) {
    d.reason = "calls stopped: " + st.stopped_reason +
               "; the postmaster must clear it";
    return d;
  }
  if (line.out_of_service) {
    d.reason = line.name + " out of service: " + line.out_of_service_reason;
    return d;
  }
  if (cfg.windows.never_open() &&
      !(is_urgent(cfg, q) && cfg.triggers.urgent_ignores_window)) {
    d.reason = "call windows are \"never\": this peer calls us";
    return d;
  }

  bool urgent = is_urgent(cfg, q);
  Gate g = gates_at(cfg, st, line, urgent, now, now);
  std::optional<std::string> trig = trigger_at(cfg, st, q, now);

  // Call now.
  if (g.until <= now && trig) {
    d.call = true;
    d.reason = *trig;
    d.next = now;
    d.hang_up_by = now + cfg.limits.max_call;
    for (size_t i = 0; i < route_count(cfg); ++i) {
      if (route_ready(st, i, now)) {
        d.route_index = i;
        d.route = i < cfg.routes.size() ? cfg.routes[i] : std::string();
        break;
      }
    }
    if (d.route_index > 0)
      d.reason += "; trying alternate " + d.route + " (" +
                  std::to_string(d.route_index + 1) + " of " +
                  std::to_string(cfg.routes.size()) + ")";
    d.reset_modem = line.last_failure == FailureClass::modem_not_responding;
    return d;
  }

  // Not now: say why, and find the next planned call.
  if (g.until > now) {
    d.reason = g.why;
    if (!trig) d.reason += "; " + threshold_text(cfg, q);
  } else {
    d.reason = threshold_text(cfg, q);
  }
  SysTime t = now;
  for (int i = 0; i < 16; ++i) {
    auto open = all_open_from(cfg, st, line, urgent, t);
    if (!open) return d;
    if (trigger_at(cfg, st, q, *open)) {
      d.next = *open;
      break;
    }
    auto nt = next_trigger(cfg, q, *open);
    if (!nt) break;
    t = *nt;
  }
  if (d.next && g.until <= now && !trig)
    d.reason += "; next call " + when(tz, now, *d.next);
  return d;
}

std::string why_line(const PeerSchedule& cfg, const Decision& d, SysTime now) {
  if (d.call)
    return cfg.name + ": calling now" +
           (d.route.empty() ? "" : " (" + d.route + ")") + ": " + d.reason;
  std::string s = cfg.name + ": not calling: " + d.reason;
  if (d.next && d.reason.find("next call") == std::string::npos)
    s += "; next call " + when(cfg.zone, now, *d.next);
  else if (!d.next)
    s += "; no call planned";
  return s;
}

// ---- Missed opportunities ----

void note_time(const PeerSchedule& cfg, PeerState& st, SysTime now) {
  if (!st.windows_checked) {
    st.windows_checked = now;
    return;
  }
  SysTime t = *st.windows_checked;
  for (int guard = 0; guard < 10000 && t < now; ++guard) {
    std::optional<SysTime> close;
    SysTime opened{};
    if (cfg.windows.always() || cfg.windows.never_open()) {
      // Windows that never close (or a peer that only calls us, whose
      // successful calls ferryd records the same way): each local
      // midnight is an opportunity.
      LocalTime lt = to_local(cfg.zone, t);
      close = local_shift(cfg.zone, t, 1440 - lt.minute);
      opened = *close - std::chrono::hours(24);
    } else {
      close = cfg.windows.next_close(cfg.zone, t);
      if (close) opened = cfg.windows.opened_before(cfg.zone, *close);
    }
    if (!close || *close > now) break;
    bool served = st.last_success && *st.last_success >= opened &&
                  *st.last_success <= *close;
    if (!served) st.missed.push_back(*close);
    t = *close;
  }
  st.windows_checked = now;
  while (st.missed.size() > 4096) st.missed.pop_front();
}

uint32_t missed_since(const PeerState& st, SysTime since) {
  uint32_t n = 0;
  for (auto it = st.missed.rbegin(); it != st.missed.rend() && *it > since;
       ++it)
    ++n;
  return n;
}

// ---- Outcomes ----

namespace {
seconds backoff(const RetryPolicy& p, FailureClass c, uint32_t failures,
                std::mt19937_64& rng) {
  double base = static_cast<double>(p.base[static_cast<int>(c)].count());
  double d = base * std::pow(p.factor, failures > 0 ? failures - 1 : 0);
  d = std::min(d, std::max(base, static_cast<double>(p.cap.count())));
  if (p.jitter > 0) {
    std::uniform_real_distribution<double> u(-p.jitter, p.jitter);
    d *= 1.0 + u(rng);
  }
  return seconds(static_cast<int64_t>(std::llround(d)));
}
}  // namespace

OutcomeEffect record_outcome(const PeerSchedule& cfg, PeerState& st,
                             LineState& line, const CallOutcome& out,
                             std::mt19937_64& rng) {
  OutcomeEffect e;
  const RetryPolicy& p = cfg.retry;
  if (st.routes.size() < route_count(cfg)) st.routes.resize(route_count(cfg));
  RouteState& rs = st.routes[std::min(out.route_index, st.routes.size() - 1)];
  st.last_attempt = out.start;

  // Bookkeeping for the limits.
  if (out.connected) {
    st.connected_starts.push_back(out.start);
    st.last_connected_end = out.end;
    while (!st.connected_starts.empty() &&
           st.connected_starts.front() < out.end - std::chrono::hours(48))
      st.connected_starts.pop_front();
  }

  // Anything but a line-scope failure proves the line and modem work.
  if (!out.failure || scope_of(*out.failure) != FailureScope::line) {
    line.down_since.reset();
    line.not_before = {};
    line.failures = 0;
    line.not_responding = 0;
    line.last_failure.reset();
  }

  std::string route =
      out.route_index < cfg.routes.size() ? cfg.routes[out.route_index] : "";
  e.log = "peer=" + cfg.name + (route.empty() ? "" : " route=" + route);

  if (!out.failure) {
    st.failures = 0;
    st.not_before = {};
    st.last_failure.reset();
    // A call that worked (the postmaster's `ferryctl dial` after fixing
    // the credentials) proves the stop's cause gone: calls resume.
    st.stopped = false;
    st.stopped_reason.clear();
    st.last_reply = out.reply;
    st.last_success = out.end;
    rs = RouteState{};
    e.log += " result=ok";
    return e;
  }

  FailureClass c = *out.failure;
  st.last_failure = c;
  st.last_reply = out.reply;
  st.last_failure_time = out.end;
  st.failures++;
  seconds wait{0};
  switch (scope_of(c)) {
    case FailureScope::route:
      rs.failures++;
      rs.last_failure = c;
      rs.last_reply = out.reply;
      // The modem's own wait is a rule, not a guess: keep to it exactly.
      if ((c == FailureClass::delayed || c == FailureClass::blacklisted) &&
          out.modem_delay)
        wait = *out.modem_delay;
      else
        wait = backoff(p, c, rs.failures, rng);
      rs.not_before = out.end + wait;
      break;
    case FailureScope::peer:
      wait = backoff(p, c, st.failures, rng);
      st.not_before = out.end + wait;
      break;
    case FailureScope::line:
      line.failures++;
      line.last_failure = c;
      wait = backoff(p, c, line.failures, rng);
      line.not_before = out.end + wait;
      if (c == FailureClass::no_dialtone) {
        if (!line.down_since) line.down_since = out.end;
      } else {
        line.down_since.reset();
      }
      if (c == FailureClass::modem_not_responding) {
        line.not_responding++;
        e.reset_modem = true;
        if (p.modem_reset_limit > 0 &&
            line.not_responding >= static_cast<uint32_t>(p.modem_reset_limit)) {
          line.out_of_service = true;
          line.out_of_service_reason = "not responding after " +
                                       std::to_string(line.not_responding) +
                                       " resets";
          e.tell_postmaster = true;
          e.postmaster_text = "modem " + line.name + " is out of service: " +
                              line.out_of_service_reason +
                              ". No calls are made on it until it is "
                              "cleared.";
        }
      }
      break;
    case FailureScope::stop:
      st.stopped = true;
      st.stopped_reason = std::string(kFailureWords[static_cast<int>(c)]) +
                          (out.reply.empty() ? "" : " (" + out.reply + ")");
      e.tell_postmaster = true;
      e.postmaster_text = "Calls to peer " + cfg.name +
                          " are stopped: " + st.stopped_reason +
                          ". Fix the cause, then clear the peer.";
      break;
  }
  e.log += " result=" + std::string(to_string(c));
  if (wait.count() > 0) e.log += " retry_in=" + format_duration(wait);
  if (e.reset_modem) e.log += " reset_modem=yes";
  if (line.out_of_service) e.log += " modem=out_of_service";
  if (st.stopped) e.log += " calls=stopped";
  return e;
}

void clear_stop(PeerState& st) {
  st.stopped = false;
  st.stopped_reason.clear();
  st.failures = 0;
}

void clear_out_of_service(LineState& line) {
  line.out_of_service = false;
  line.out_of_service_reason.clear();
  line.not_responding = 0;
  line.not_before = {};
}

// ---- Lifetimes ----

LifetimeCheck check_lifetime(const Lifetime& lt, SysTime arrival,
                             uint32_t missed, bool warned, SysTime now) {
  LifetimeCheck r;
  auto age = duration_cast<seconds>(now - arrival);
  bool limited = lt.max_age.count() > 0 || lt.max_missed > 0;
  bool old = lt.max_age.count() == 0 || age >= lt.max_age;
  bool missed_enough = lt.max_missed == 0 || missed >= lt.max_missed;
  if (lt.max_age.count() > 0) r.retry_until = arrival + lt.max_age;
  if (limited && old && missed_enough) {
    r.verdict = Verdict::give_up;
    r.reason = "undeliverable after " + format_duration(age) + " and " +
               std::to_string(missed) + " missed call opportunities";
    return r;
  }
  if (!warned && lt.warn_after.count() > 0 && age >= lt.warn_after) {
    r.verdict = Verdict::warn;
    r.reason = "not delivered after " + format_duration(age);
  }
  return r;
}

}  // namespace ferry::gw

namespace ferry::gw {

bool set_schedule_key(PeerSchedule& p, std::string_view key,
                      std::string_view value, std::string& error,
                      const std::string& zoneinfo_dir) {
  std::string k(key);
  std::string v(trim(value));
  auto fail = [&](const std::string& why) {
    error = k + ": " + why;
    return false;
  };
  auto dur = [&](std::chrono::seconds& out) {
    auto d = parse_duration(v);
    if (!d) return fail("\"" + v + "\" is not a duration (e.g. 30m, 1h30m)");
    out = *d;
    return true;
  };
  auto num = [&](auto& out) {
    if (v.empty() || v.size() > 9 ||
        !std::all_of(v.begin(), v.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        }))
      return fail("\"" + v + "\" is not a whole number");
    out = static_cast<std::remove_reference_t<decltype(out)>>(std::stoul(v));
    return true;
  };
  auto real = [&](double& out) {
    char* end = nullptr;
    out = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || out < 0)
      return fail("\"" + v + "\" is not a number");
    return true;
  };
  auto boolean = [&](bool& out) {
    std::string l = lower(v);
    if (l == "yes" || l == "true" || l == "on" || l == "1")
      out = true;
    else if (l == "no" || l == "false" || l == "off" || l == "0")
      out = false;
    else
      return fail("\"" + v + "\" is not yes or no");
    return true;
  };

  if (k == "windows") {
    auto w = CallWindows::parse(v, error);
    if (!w) return fail(error);
    p.windows = *w;
    return true;
  }
  if (k == "zone") {
    auto z = TimeZone::parse(v, error, zoneinfo_dir);
    if (!z) return fail(error);
    p.zone = *z;
    return true;
  }
  if (k == "routes") {
    p.routes.clear();
    for (std::string_view r : words(v)) p.routes.emplace_back(r);
    return true;
  }
  if (k == "line") {
    if (v.empty()) return fail("empty");
    p.line = v;
    return true;
  }
  if (k == "poll") {
    auto t = parse_poll_times(v, error);
    if (!t) return fail(error);
    p.triggers.poll_times = *t;
    return true;
  }
  if (k == "min_messages") return num(p.triggers.min_messages);
  if (k == "min_bytes") {
    auto s = parse_size(v);
    if (!s) return fail("\"" + v + "\" is not a size (e.g. 64K)");
    p.triggers.min_bytes = *s;
    return true;
  }
  if (k == "max_age") return dur(p.triggers.max_age);
  if (k == "urgent_priority") return num(p.triggers.urgent_priority);
  if (k == "urgent_ignores_window")
    return boolean(p.triggers.urgent_ignores_window);
  if (k == "max_call") return dur(p.limits.max_call);
  if (k == "min_gap") return dur(p.limits.min_gap);
  if (k == "max_calls_per_day") return num(p.limits.max_calls_per_day);
  if (k == "lifetime") return dur(p.lifetime.max_age);
  if (k == "lifetime_missed") return num(p.lifetime.max_missed);
  if (k == "warn_after") return dur(p.lifetime.warn_after);
  if (k == "retry_factor") return real(p.retry.factor);
  if (k == "retry_cap") return dur(p.retry.cap);
  if (k == "retry_jitter") {
    if (!real(p.retry.jitter)) return false;
    if (p.retry.jitter >= 1) return fail("must be below 1");
    return true;
  }
  if (k == "modem_reset_limit") return num(p.retry.modem_reset_limit);
  if (k.rfind("retry_", 0) == 0) {
    if (auto c = parse_failure_class(k.substr(6)))
      return dur(p.retry.base[static_cast<int>(*c)]);
  }
  error = "unknown schedule key \"" + k + "\"";
  return false;
}

}  // namespace ferry::gw
