// The call scheduler's decisions: when to dial a peer, which number or
// route to try, how long to wait after each kind of failure, and when to
// warn a sender or give a message up.
//
// Everything here is a pure function of a configuration, a state record
// and a time read from a Clock by the caller: nothing touches the spool,
// a modem or the wall clock, so tests and the simulator run weeks of
// traffic in seconds.  ferryd keeps one PeerState per peer and one
// LineState per modem line; after every call it feeds the outcome to
// record_outcome() and asks decide() again.
//
// Every decision carries a reason a person reads ("outside the call window
// until Mon 18:00") and the time of the next planned call; ferryd keeps the
// last one per peer for `ferryctl why PEER`.
//
// Value syntax (the parsers below; ferry.conf keys use them):
//   windows   "always" | "never" | WINDOW {"," WINDOW}
//             WINDOW = [DAYS] HH:MM-HH:MM ; DAYS = Day | Day-Day | "daily"
//             Day = Mon..Sun (any case).  An end at or before the start
//             crosses midnight: "Fri 18:00-07:30" runs to Sat 07:30.
//             "24:00" is the end of the day.
//   zone      "UTC" | "+HH:MM" | "-HH:MM" | a tz database name such as
//             "Europe/Berlin" read from the zoneinfo directory.  Windows
//             and poll times are wall-clock times in that zone.
//   poll      HH:MM {" " HH:MM}  (local times of day; empty: no polls)
//   duration  N{s|m|h|d|w}, several may follow each other ("1h30m"); a bare
//             number is seconds.
//   size      N[K|M|G] bytes (binary multiples).
//
// Known limitations (issue 7):
// - tz names are read from the zone file's transition table only; the
//   POSIX rule at its end is not applied, so offsets freeze after the last
//   listed transition (2037 for Debian's "fat" files).
// - Windows and poll times have minute resolution.  A window that opens
//   inside a daylight-saving gap opens at the first valid minute's UTC
//   equivalent without correction.
// - A window that passes without a successful call counts as a missed
//   opportunity even when no call was wanted (below threshold); with
//   max_age set as a trigger this only matters for very slow peers.
//
// Concurrency: the types are plain values with no locks; the caller uses
// them from one thread (ferryd's io_context) or guards them itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "gateway/clock.h"
#include "queue/spool.h"

namespace ferry::gw {

// ---- Time zones and call windows ----

// A fixed UTC offset or the rules of a tz database zone.
class TimeZone {
 public:
  TimeZone() = default;  // UTC
  // Parses `spec` (see "zone" above).  Returns nullopt and sets `error`
  // (naming the spec and the cause) on a bad spec or unreadable zone file.
  static std::optional<TimeZone> parse(
      std::string_view spec, std::string& error,
      const std::string& zoneinfo_dir = "/usr/share/zoneinfo");
  // Offset of local time from UTC at the instant `t`.
  std::chrono::seconds offset_at(SysTime t) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_ = "UTC";
  int32_t base_offset_ = 0;  // before the first transition, or fixed
  // (UTC seconds, offset from then on), ascending.
  std::vector<std::pair<int64_t, int32_t>> transitions_;
};

// Local wall-clock facts about an instant.
struct LocalTime {
  int weekday = 0;   // 0 = Monday ... 6 = Sunday
  int minute = 0;    // minute of the day, 0..1439
  int64_t days = 0;  // local days since 1970-01-01
};
LocalTime to_local(const TimeZone& tz, SysTime t);
// "Mon 18:00" in `tz`.
std::string format_local(const TimeZone& tz, SysTime t);

// When calls to a peer are allowed: a set of intervals of the week.
class CallWindows {
 public:
  static constexpr int kWeek = 7 * 1440;  // minutes

  CallWindows() = default;  // "always"
  static std::optional<CallWindows> parse(std::string_view spec,
                                          std::string& error);
  static CallWindows never();

  bool always() const;
  bool never_open() const { return spans_.empty(); }
  bool open_at(const TimeZone& tz, SysTime t) const;
  // The first instant at or after `t` when the windows are open; nullopt
  // for "never".  Returns `t` itself when open at `t`.
  std::optional<SysTime> next_open(const TimeZone& tz, SysTime t) const;
  // The first instant after `t` when an open window closes; nullopt when
  // the windows never close ("always") or never open.
  std::optional<SysTime> next_close(const TimeZone& tz, SysTime t) const;
  // For a close time returned by next_close(): when that window opened.
  SysTime opened_before(const TimeZone& tz, SysTime close) const;
  const std::string& spec() const { return spec_; }

 private:
  // Length in minutes of the open stretch that ends at minute-of-week
  // `end` (following a stretch across Sunday midnight).
  int stretch_ending_at(int end) const;

  // Half-open [begin, end) minute-of-week spans (Monday 00:00 = 0),
  // sorted and merged, within [0, kWeek]; a window across Sunday midnight
  // is two spans, one ending at kWeek and one starting at 0.
  std::vector<std::pair<int, int>> spans_{{0, kWeek}};
  std::string spec_ = "always";
};

// ---- Value parsers for ferry.conf ----
std::optional<std::chrono::seconds> parse_duration(std::string_view s);
std::optional<uint64_t> parse_size(std::string_view s);
// "08:00 12:00 17:30" -> minutes of the day, sorted.
std::optional<std::vector<int>> parse_poll_times(std::string_view s,
                                                 std::string& error);
std::string format_duration(std::chrono::seconds d);  // "1h30m"
std::string format_bytes(uint64_t bytes);              // "9 KiB"

// ---- Failures ----

// Why a call attempt failed, as the link session classifies it (from the
// modem's result code, the socket, or the SMTP session on the line).
enum class FailureClass {
  busy,                  // far line engaged: retry soon
  no_answer,             // nobody answered: retry later
  no_dialtone,           // our own line is down: every peer waits
  no_carrier,            // dialled but no handshake
  modem_not_responding,  // reset it; out of service after N in a row
  delayed,               // the modem imposes a wait before a redial
  blacklisted,           // the modem refuses this number for a while
  port_locked,           // another program holds the port's lock
  port_unavailable,      // the port cannot be opened
  auth_failed,           // the far side refused our credentials: stop
  config_error,          // our configuration is wrong: stop
  protocol_error,        // the session on the line went wrong
  dropped,               // the line dropped during the session
};
constexpr int kFailureClasses = 13;
std::string_view to_string(FailureClass c);
std::optional<FailureClass> parse_failure_class(std::string_view s);

// The class of a failed dial as the modem driver reports it (an error in
// ferry::modem::modem_category()); nullopt for other categories (the link
// session classifies socket, TLS and SMTP failures itself) and for the
// answering side's outcomes (no_call, call_abandoned).
std::optional<FailureClass> classify_modem_error(std::error_code ec);

// Which state a failure class blocks.
enum class FailureScope {
  route,  // this number/route only: an alternate may be tried at once
  peer,   // every route of this peer
  line,   // every peer that uses this modem line
  stop,   // this peer until the postmaster clears it
};
FailureScope scope_of(FailureClass c);

struct RetryPolicy {
  // First wait after a failure of each class (indexed by FailureClass).
  std::chrono::seconds base[kFailureClasses] = {};
  double factor = 2.0;  // growth per consecutive failure
  std::chrono::seconds cap = std::chrono::hours(4);
  double jitter = 0.1;  // +/- this fraction, uniformly
  // Consecutive modem_not_responding before the modem is out of service.
  int modem_reset_limit = 3;
  RetryPolicy();  // the defaults documented in schedule.cc
};

// ---- Configuration of one peer ----

struct Triggers {
  uint64_t min_messages = 1;        // call when this many are queued (0 = off)
  uint64_t min_bytes = 0;           // ... or this many bytes (0 = off)
  std::chrono::seconds max_age{0};  // ... or the oldest is this old (0 = off)
  int urgent_priority = 1;          // ... or one has priority >= this (0 = off)
  bool urgent_ignores_window = false;  // urgent mail calls outside windows
  std::vector<int> poll_times;         // local minutes of day: call to collect
};

struct Limits {
  std::chrono::seconds max_call = std::chrono::minutes(30);
  // From the end of the last connected call to the next dial.
  std::chrono::seconds min_gap = std::chrono::minutes(0);
  uint32_t max_calls_per_day = 0;  // connected calls in any 24 h (0 = off)
};

struct Lifetime {
  // A message is returned only when BOTH limits are reached (0 disables a
  // limit): it is older than max_age AND at least max_missed call
  // opportunities (windows that closed without a successful call) passed
  // since it arrived.  So a peer that is offline by schedule over a
  // weekend bounces nothing.  For windows "always" and "never" (a peer
  // that only calls us) each local midnight is one opportunity.
  std::chrono::seconds max_age = std::chrono::hours(24 * 5);
  uint32_t max_missed = 3;
  std::chrono::seconds warn_after = std::chrono::hours(4);  // 0 = never
};

struct PeerSchedule {
  std::string name;
  CallWindows windows;
  TimeZone zone;
  Triggers triggers;
  Limits limits;
  RetryPolicy retry;
  Lifetime lifetime;
  // Numbers or routes in order of preference ("5551234", "tcp:host:25").
  std::vector<std::string> routes;
  std::string line = "modem0";  // the modem line this peer dials through
};

// Sets one schedule key of a [peer NAME] (or [schedule] default) section
// from its text value.  Returns false and sets `error` ("windows: ...") for
// an unknown key or a bad value.  Keys and defaults:
//   windows = always            zone = UTC        routes = (none)
//   line = modem0               poll = (none)
//   min_messages = 1            min_bytes = 0     max_age = 0
//   urgent_priority = 1         urgent_ignores_window = no
//   max_call = 30m              min_gap = 0       max_calls_per_day = 0
//   lifetime = 5d               lifetime_missed = 3   warn_after = 4h
//   retry_CLASS = (see RetryPolicy()) for each FailureClass name
//   retry_factor = 2            retry_cap = 4h    retry_jitter = 0.1
//   modem_reset_limit = 3
// `zoneinfo_dir` is where tz names are looked up.
bool set_schedule_key(PeerSchedule& p, std::string_view key,
                      std::string_view value, std::string& error,
                      const std::string& zoneinfo_dir = "/usr/share/zoneinfo");

// ---- State ----

struct RouteState {
  uint32_t failures = 0;  // consecutive
  SysTime not_before{};   // backing off until
  std::optional<FailureClass> last_failure;
  std::string last_reply;
};

struct PeerState {
  std::vector<RouteState> routes;  // sized to PeerSchedule::routes
  uint32_t failures = 0;           // consecutive failed calls (any route)
  SysTime not_before{};            // peer-scope backoff
  std::optional<FailureClass> last_failure;
  std::string last_reply;
  SysTime last_failure_time{};
  std::optional<SysTime> last_attempt;  // start of the last dial
  std::optional<SysTime> last_connected_end;
  std::optional<SysTime> last_success;   // end of the last complete call
  std::deque<SysTime> connected_starts;  // for max_calls_per_day
  bool stopped = false;                  // auth/config failure
  std::string stopped_reason;
  // Missed call opportunities: local close times of windows that passed
  // without a successful call (kept for the longest lifetime).
  std::deque<SysTime> missed;
  std::optional<SysTime> windows_checked;  // note_time() progress
};

struct LineState {
  std::string name = "modem0";
  std::optional<SysTime> down_since;  // NO DIALTONE seen
  SysTime not_before{};               // line-scope backoff
  uint32_t failures = 0;
  std::optional<FailureClass> last_failure;
  uint32_t not_responding = 0;  // consecutive
  bool out_of_service = false;
  std::string out_of_service_reason;
};

// What waits for a peer (a summary of queue::RouteStats).
struct QueueSummary {
  uint64_t messages = 0;
  uint64_t bytes = 0;
  std::optional<SysTime> oldest;
  int max_priority = 0;
};
QueueSummary summarize(const queue::RouteStats& s);

// ---- Decisions ----

struct Decision {
  bool call = false;
  size_t route_index = 0;  // which alternate, when call
  std::string route;
  // Why we call ("urgent message queued") or why not ("outside the call
  // window until Mon 18:00").
  std::string reason;
  // When call: now.  Otherwise the next planned call assuming the queue
  // does not change; nullopt when nothing would make a call.
  std::optional<SysTime> next;
  SysTime hang_up_by{};      // when call: now + max_call
  bool reset_modem = false;  // reset the modem before dialling
};

Decision decide(const PeerSchedule& cfg, const PeerState& st,
                const LineState& line, const QueueSummary& q, SysTime now);

// The answer to `ferryctl why PEER`: "isp: calling now: urgent message
// queued" or "isp: not calling: outside the call window until Mon 18:00;
// next call Mon 18:00".
std::string why_line(const PeerSchedule& cfg, const Decision& d, SysTime now);

// Brings the missed-opportunity count up to `now`: every window that
// closed since the last call of note_time() without a successful call
// during it is one missed opportunity.  Call before lifetime checks.
void note_time(const PeerSchedule& cfg, PeerState& st, SysTime now);
// Missed opportunities since `since` (a message's arrival).
uint32_t missed_since(const PeerState& st, SysTime since);

// The result of a call attempt, as the link session reports it.
struct CallOutcome {
  size_t route_index = 0;
  SysTime start{};
  SysTime end{};
  bool connected = false;  // the line came up (counts against limits)
  std::optional<FailureClass> failure;  // none: the exchange completed
  std::string reply;  // the modem result or the far side's last reply
  // delayed/blacklisted: the wait the modem imposes, when it says so.
  std::optional<std::chrono::seconds> modem_delay;
};

struct OutcomeEffect {
  bool tell_postmaster = false;  // auth/config failure, modem out of service
  std::string postmaster_text;
  bool reset_modem = false;
  std::string log;  // one key=value line for the log
};

OutcomeEffect record_outcome(const PeerSchedule& cfg, PeerState& st,
                             LineState& line, const CallOutcome& out,
                             std::mt19937_64& rng);
// The postmaster cleared a stopped peer or an out-of-service modem.
void clear_stop(PeerState& st);
void clear_out_of_service(LineState& line);

// ---- Lifetimes ----

enum class Verdict { keep, warn, give_up };
struct LifetimeCheck {
  Verdict verdict = Verdict::keep;
  std::string reason;
  // For a warning: the time after which the message will be returned, if
  // the days limit is what remains (Will-Retry-Until).
  std::optional<SysTime> retry_until;
};
// `warned`: a delay warning was already sent for this message.
LifetimeCheck check_lifetime(const Lifetime& lt, SysTime arrival,
                             uint32_t missed, bool warned, SysTime now);

}  // namespace ferry::gw
