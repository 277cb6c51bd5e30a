#include "gateway/schedule.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "modem/error.h"

namespace ferry::gw {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

// 2026-12-07 is a Monday.  at(0, 18, 0) is Monday 18:00 UTC.
SysTime at(int day, int hour, int minute, int sec = 0) {
  return SysTime(seconds(1796601600)) + hours(24 * day) + hours(hour) +
         minutes(minute) + seconds(sec);
}

CallWindows windows(std::string_view spec) {
  std::string error;
  auto w = CallWindows::parse(spec, error);
  EXPECT_TRUE(w) << error;
  return w ? *w : CallWindows();
}

// A peer with one number, no jitter (so waits are exact), calling when
// one message is queued, at any time.
PeerSchedule peer() {
  PeerSchedule p;
  p.name = "isp";
  p.routes = {"5551234"};
  p.retry.jitter = 0;
  return p;
}

QueueSummary queued(uint64_t messages, uint64_t bytes, SysTime oldest,
                    int priority = 0) {
  QueueSummary q;
  q.messages = messages;
  q.bytes = bytes;
  q.oldest = oldest;
  q.max_priority = priority;
  return q;
}

class SchedTest : public ::testing::Test {
 protected:
  // Records a failed attempt of `c` at `t` on `route`.
  OutcomeEffect fail(FailureClass c, SysTime t, size_t route = 0,
                     std::optional<seconds> delay = std::nullopt,
                     std::string reply = "") {
    CallOutcome o;
    o.route_index = route;
    o.start = t;
    o.end = t;
    o.failure = c;
    o.modem_delay = delay;
    o.reply = std::move(reply);
    return record_outcome(cfg, st, line, o, rng);
  }
  void succeed(SysTime start, SysTime end, size_t route = 0) {
    CallOutcome o;
    o.route_index = route;
    o.start = start;
    o.end = end;
    o.connected = true;
    record_outcome(cfg, st, line, o, rng);
  }
  Decision decide_at(SysTime t) { return decide(cfg, st, line, q, t); }

  PeerSchedule cfg = peer();
  PeerState st;
  LineState line;
  QueueSummary q = queued(1, 2048, at(0, 9, 0));
  std::mt19937_64 rng{42};
};

// ---- Windows ----

TEST(CallWindowsTest, WeekdayEveningsCrossMidnight) {
  CallWindows w = windows("Mon-Fri 18:00-07:30, Sat 00:00-24:00");
  TimeZone utc;
  EXPECT_TRUE(w.open_at(utc, at(0, 18, 0)));
  EXPECT_TRUE(w.open_at(utc, at(1, 2, 0)));  // Monday night
  EXPECT_TRUE(w.open_at(utc, at(1, 7, 29)));
  EXPECT_FALSE(w.open_at(utc, at(1, 7, 30)));  // Tuesday morning
  EXPECT_FALSE(w.open_at(utc, at(1, 12, 0)));
  EXPECT_TRUE(w.open_at(utc, at(5, 7, 0)));    // Friday night
  EXPECT_TRUE(w.open_at(utc, at(5, 23, 59)));  // Saturday all day
  EXPECT_FALSE(w.open_at(utc, at(6, 0, 0)));   // Sunday
  EXPECT_FALSE(w.open_at(utc, at(7, 7, 0)));   // Monday morning

  EXPECT_EQ(w.next_open(utc, at(1, 12, 0)), at(1, 18, 0));
  EXPECT_EQ(w.next_open(utc, at(6, 10, 0)), at(7, 18, 0));
  EXPECT_EQ(w.next_open(utc, at(1, 20, 0)), at(1, 20, 0));  // open now
  EXPECT_EQ(w.next_close(utc, at(1, 20, 0)), at(2, 7, 30));
  // Friday night runs into the Saturday window: one stretch to Sunday.
  EXPECT_EQ(w.next_close(utc, at(4, 20, 0)), at(6, 0, 0));
}

TEST(CallWindowsTest, SundayNightWrapsIntoMonday) {
  CallWindows w = windows("Sun 22:00-02:00");
  TimeZone utc;
  EXPECT_TRUE(w.open_at(utc, at(6, 23, 0)));
  EXPECT_TRUE(w.open_at(utc, at(7, 1, 59)));
  EXPECT_FALSE(w.open_at(utc, at(7, 2, 0)));
  EXPECT_EQ(w.next_close(utc, at(6, 23, 0)), at(7, 2, 0));
  EXPECT_EQ(w.next_open(utc, at(7, 3, 0)), at(13, 22, 0));
  EXPECT_EQ(w.opened_before(utc, at(7, 2, 0)), at(6, 22, 0));
}

TEST(CallWindowsTest, AlwaysAndNever) {
  TimeZone utc;
  CallWindows a = windows("always");
  EXPECT_TRUE(a.always());
  EXPECT_TRUE(a.open_at(utc, at(3, 4, 5)));
  EXPECT_FALSE(a.next_close(utc, at(0, 0, 0)));
  CallWindows n = windows("never");
  EXPECT_FALSE(n.open_at(utc, at(3, 4, 5)));
  EXPECT_FALSE(n.next_open(utc, at(0, 0, 0)));
  // "daily" and a bare time mean every day.
  CallWindows d = windows("daily 12:00-13:00, 23:00-24:00");
  EXPECT_TRUE(d.open_at(utc, at(6, 12, 30)));
  EXPECT_TRUE(d.open_at(utc, at(2, 23, 30)));
}

TEST(CallWindowsTest, BadSpecsNameTheProblem) {
  std::string error;
  EXPECT_FALSE(CallWindows::parse("Mon-Fri 25:00-07:00", error));
  EXPECT_NE(error.find("bad time"), std::string::npos) << error;
  EXPECT_FALSE(CallWindows::parse("Funday 10:00-11:00", error));
  EXPECT_NE(error.find("unknown day"), std::string::npos) << error;
  EXPECT_FALSE(CallWindows::parse("10:00", error));
  EXPECT_FALSE(CallWindows::parse("Mon 10:00-11:00 extra", error));
}

TEST(TimeZoneTest, FixedOffsetShiftsWindows) {
  std::string error;
  auto tz = TimeZone::parse("+02:00", error);
  ASSERT_TRUE(tz) << error;
  EXPECT_EQ(tz->offset_at(at(0, 0, 0)), hours(2));
  CallWindows w = windows("Mon 18:00-19:00");
  EXPECT_TRUE(w.open_at(*tz, at(0, 16, 30)));  // 18:30 local
  EXPECT_FALSE(w.open_at(*tz, at(0, 18, 30)));
  EXPECT_EQ(format_local(*tz, at(0, 16, 0)), "Mon 18:00");
  EXPECT_FALSE(TimeZone::parse("+25:00", error));
  EXPECT_FALSE(TimeZone::parse("../etc/passwd", error));
}

TEST(TimeZoneTest, TzNameFollowsDaylightSaving) {
  if (!std::filesystem::exists("/usr/share/zoneinfo/Europe/Berlin"))
    GTEST_SKIP() << "no tz database";
  std::string error;
  auto tz = TimeZone::parse("Europe/Berlin", error);
  ASSERT_TRUE(tz) << error;
  EXPECT_EQ(tz->offset_at(at(0, 12, 0)), hours(1));         // December
  EXPECT_EQ(tz->offset_at(at(0, 12, 0) + hours(24 * 210)),  // July 2027
            hours(2));
  CallWindows w = windows("Mon-Fri 18:00-07:30");
  EXPECT_EQ(w.next_open(*tz, at(0, 12, 0)), at(0, 17, 0));
  EXPECT_FALSE(TimeZone::parse("No/Such_Zone", error));
}

TEST(ValueParsersTest, DurationsSizesPolls) {
  EXPECT_EQ(parse_duration("90"), seconds(90));
  EXPECT_EQ(parse_duration("1h30m"), minutes(90));
  EXPECT_EQ(parse_duration("2d"), hours(48));
  EXPECT_FALSE(parse_duration("1h30"));
  EXPECT_FALSE(parse_duration("soon"));
  EXPECT_EQ(parse_size("64K"), 65536u);
  EXPECT_EQ(parse_size("2MiB"), 2u << 20);
  EXPECT_FALSE(parse_size("lots"));
  std::string error;
  auto p = parse_poll_times("17:30 08:00, 12:00", error);
  ASSERT_TRUE(p) << error;
  EXPECT_EQ(*p, (std::vector<int>{480, 720, 1050}));
  EXPECT_FALSE(parse_poll_times("8am", error));
  EXPECT_EQ(format_duration(minutes(90)), "1h30m");
  EXPECT_EQ(format_bytes(9 * 1024), "9 KiB");
}

TEST(ValueParsersTest, ScheduleKeys) {
  PeerSchedule p;
  std::string error;
  EXPECT_TRUE(set_schedule_key(p, "windows", "Mon-Fri 18:00-07:30", error));
  EXPECT_TRUE(set_schedule_key(p, "min_bytes", "64K", error));
  EXPECT_TRUE(set_schedule_key(p, "retry_busy", "2m", error));
  EXPECT_TRUE(set_schedule_key(p, "routes", "5551234, 5559876", error));
  EXPECT_EQ(p.triggers.min_bytes, 65536u);
  EXPECT_EQ(p.retry.base[static_cast<int>(FailureClass::busy)], minutes(2));
  EXPECT_EQ(p.routes.size(), 2u);
  EXPECT_FALSE(set_schedule_key(p, "max_call", "forever", error));
  EXPECT_NE(error.find("max_call"), std::string::npos);
  EXPECT_FALSE(set_schedule_key(p, "colour", "blue", error));
}

// ---- Triggers and reasons ----

TEST_F(SchedTest, OutsideWindowSaysWhenItOpens) {
  cfg.windows = windows("Mon-Fri 18:00-07:30");
  Decision d = decide_at(at(5, 10, 0));  // Saturday
  EXPECT_FALSE(d.call);
  EXPECT_EQ(d.reason, "outside the call window until Mon 18:00");
  EXPECT_EQ(d.next, at(7, 18, 0));
}

TEST_F(SchedTest, BelowThresholdSaysHowFar) {
  cfg.triggers.min_messages = 5;
  cfg.triggers.min_bytes = 64 * 1024;
  q = queued(2, 9 * 1024, at(0, 9, 0));
  Decision d = decide_at(at(0, 10, 0));
  EXPECT_FALSE(d.call);
  EXPECT_EQ(d.reason,
            "below threshold: 2 messages, 9 KiB (threshold 5 messages or "
            "64 KiB)");
  EXPECT_FALSE(d.next);  // nothing but more mail would make a call
}

TEST_F(SchedTest, ThresholdsAgeAndUrgentEachCall) {
  cfg.triggers.min_messages = 5;
  cfg.triggers.min_bytes = 64 * 1024;
  cfg.triggers.max_age = hours(4);
  q = queued(5, 1000, at(0, 9, 0));
  EXPECT_TRUE(decide_at(at(0, 10, 0)).call);
  q = queued(1, 100 * 1024, at(0, 9, 0));
  EXPECT_TRUE(decide_at(at(0, 10, 0)).call);
  q = queued(1, 100, at(0, 9, 0));
  Decision young = decide_at(at(0, 10, 0));
  EXPECT_FALSE(young.call);
  EXPECT_EQ(young.next, at(0, 13, 0));  // when the oldest reaches 4h
  Decision old = decide_at(at(0, 13, 0));
  EXPECT_TRUE(old.call);
  EXPECT_EQ(old.reason, "oldest message waiting 4h (limit 4h)");
  q = queued(1, 100, at(0, 9, 0), 2);
  Decision urgent = decide_at(at(0, 10, 0));
  EXPECT_TRUE(urgent.call);
  EXPECT_EQ(urgent.reason, "urgent message queued (priority 2)");
}

TEST_F(SchedTest, UrgentMailMayBypassTheWindow) {
  cfg.windows = windows("Mon-Fri 18:00-07:30");
  q = queued(1, 100, at(1, 9, 0), 1);
  EXPECT_FALSE(decide_at(at(1, 10, 0)).call);
  cfg.triggers.urgent_ignores_window = true;
  EXPECT_TRUE(decide_at(at(1, 10, 0)).call);
}

TEST_F(SchedTest, PollTimesCollectInboundMailOncePerPoll) {
  cfg.triggers.poll_times = {8 * 60, 12 * 60};
  q = QueueSummary{};
  st.last_success = at(0, 7, 0);
  Decision before = decide_at(at(0, 7, 30));
  EXPECT_FALSE(before.call);
  EXPECT_EQ(before.next, at(0, 8, 0));
  Decision d = decide_at(at(0, 8, 0));
  EXPECT_TRUE(d.call);
  EXPECT_EQ(d.reason, "poll time 08:00");
  succeed(at(0, 8, 0), at(0, 8, 2));
  Decision after = decide_at(at(0, 8, 10));
  EXPECT_FALSE(after.call);
  EXPECT_EQ(after.next, at(0, 12, 0));
}

TEST_F(SchedTest, NothingQueuedNoPollsMeansNoPlannedCall) {
  q = QueueSummary{};
  Decision d = decide_at(at(0, 10, 0));
  EXPECT_FALSE(d.call);
  EXPECT_EQ(d.reason, "nothing queued");
  EXPECT_FALSE(d.next);
}

// ---- Limits ----

TEST_F(SchedTest, LongestCallAndMinimumGap) {
  cfg.limits.max_call = minutes(20);
  cfg.limits.min_gap = minutes(30);
  Decision d = decide_at(at(0, 10, 0));
  ASSERT_TRUE(d.call);
  EXPECT_EQ(d.hang_up_by, at(0, 10, 20));
  succeed(at(0, 10, 0), at(0, 10, 5));
  Decision gap = decide_at(at(0, 10, 10));
  EXPECT_FALSE(gap.call);
  EXPECT_EQ(gap.reason, "minimum gap of 30m between calls until 10:35");
  EXPECT_EQ(gap.next, at(0, 10, 35));
}

TEST_F(SchedTest, CallsPerDayLimit) {
  cfg.limits.max_calls_per_day = 2;
  succeed(at(0, 9, 0), at(0, 9, 5));
  succeed(at(0, 12, 0), at(0, 12, 5));
  Decision d = decide_at(at(0, 15, 0));
  EXPECT_FALSE(d.call);
  EXPECT_NE(d.reason.find("call limit reached: 2 calls in 24 h"),
            std::string::npos)
      << d.reason;
  EXPECT_EQ(d.next, at(1, 9, 0));
  EXPECT_TRUE(decide_at(at(1, 9, 0)).call);
}

// ---- Failure classes ----

TEST_F(SchedTest, BusyRetriesSoon) {
  fail(FailureClass::busy, at(0, 14, 2), 0, std::nullopt, "BUSY");
  Decision d = decide_at(at(0, 14, 3));
  EXPECT_FALSE(d.call);
  EXPECT_EQ(d.reason, "backing off after busy until 14:05");
  EXPECT_EQ(d.next, at(0, 14, 5));
  EXPECT_TRUE(decide_at(at(0, 14, 5)).call);
}

TEST_F(SchedTest, NoAnswerRetriesLater) {
  fail(FailureClass::no_answer, at(0, 14, 0));
  EXPECT_EQ(decide_at(at(0, 14, 1)).next, at(0, 14, 15));
}

TEST_F(SchedTest, NoCarrierRetriesAfterItsBase) {
  fail(FailureClass::no_carrier, at(0, 14, 0));
  EXPECT_EQ(decide_at(at(0, 14, 1)).next, at(0, 14, 5));
}

TEST_F(SchedTest, NoDialtoneHoldsEveryPeerOnTheLine) {
  fail(FailureClass::no_dialtone, at(0, 13, 10), 0, std::nullopt,
       "NO DIALTONE");
  Decision d = decide_at(at(0, 13, 11));
  EXPECT_FALSE(d.call);
  EXPECT_EQ(d.reason, "line down since 13:10 (NO DIALTONE); next try 13:15");

  // Another peer with its own state, same line: it waits too.
  PeerSchedule other = peer();
  other.name = "branch";
  PeerState other_state;
  Decision o = decide(other, other_state, line, q, at(0, 13, 12));
  EXPECT_FALSE(o.call);
  EXPECT_EQ(o.reason.rfind("line down since 13:10", 0), 0u) << o.reason;

  // A second NO DIALTONE keeps the first time and waits longer.
  fail(FailureClass::no_dialtone, at(0, 13, 15));
  Decision again = decide_at(at(0, 13, 16));
  EXPECT_EQ(again.next, at(0, 13, 25));
  EXPECT_EQ(line.down_since, at(0, 13, 10));

  // Any call that gets past the dial tone shows the line is back.
  fail(FailureClass::busy, at(0, 13, 25));
  EXPECT_FALSE(line.down_since);
}

TEST_F(SchedTest, SilentModemIsResetThenOutOfService) {
  OutcomeEffect e1 = fail(FailureClass::modem_not_responding, at(0, 9, 0));
  EXPECT_TRUE(e1.reset_modem);
  EXPECT_FALSE(e1.tell_postmaster);
  Decision d = decide_at(at(0, 9, 1));
  EXPECT_TRUE(d.call);
  EXPECT_TRUE(d.reset_modem);
  fail(FailureClass::modem_not_responding, at(0, 9, 1));
  OutcomeEffect e3 = fail(FailureClass::modem_not_responding, at(0, 9, 5));
  EXPECT_TRUE(e3.tell_postmaster);
  EXPECT_NE(e3.postmaster_text.find("out of service"), std::string::npos);
  EXPECT_TRUE(line.out_of_service);
  Decision out = decide_at(at(1, 9, 0));
  EXPECT_FALSE(out.call);
  EXPECT_FALSE(out.next);
  EXPECT_EQ(out.reason, "modem0 out of service: not responding after 3 resets");
  clear_out_of_service(line);
  EXPECT_TRUE(decide_at(at(1, 9, 0)).call);
}

TEST_F(SchedTest, DelayedWaitsExactlyWhatTheModemSays) {
  cfg.retry.jitter = 0.5;  // a modem's rule is never jittered
  fail(FailureClass::delayed, at(0, 9, 0), 0, minutes(7), "DELAYED");
  EXPECT_EQ(decide_at(at(0, 9, 1)).next, at(0, 9, 7));
  EXPECT_NE(decide_at(at(0, 9, 1)).reason.find("DELAYED by the modem"),
            std::string::npos);
}

TEST_F(SchedTest, BlacklistedNumberWaitsAndAlternateIsTried) {
  cfg.routes = {"5551234", "5559876"};
  fail(FailureClass::blacklisted, at(0, 9, 0), 0, hours(2), "BLACKLISTED");
  Decision d = decide_at(at(0, 9, 1));
  ASSERT_TRUE(d.call);
  EXPECT_EQ(d.route, "5559876");
  EXPECT_EQ(st.routes[0].not_before, at(0, 11, 0));
}

TEST_F(SchedTest, PortLockedAndUnavailableWaitOnTheLine) {
  fail(FailureClass::port_locked, at(0, 9, 0));
  Decision d = decide_at(at(0, 9, 1));
  EXPECT_EQ(d.next, at(0, 9, 2));
  EXPECT_NE(d.reason.find("port locked by another program"), std::string::npos)
      << d.reason;
  fail(FailureClass::port_unavailable, at(0, 10, 0));
  // The second line failure in a row: base 5m doubled.
  EXPECT_EQ(decide_at(at(0, 10, 1)).next, at(0, 10, 10));
}

TEST_F(SchedTest, AuthFailureStopsCallsAndTellsPostmaster) {
  OutcomeEffect e = fail(FailureClass::auth_failed, at(0, 9, 0), 0,
                         std::nullopt, "535 5.7.8 bad credentials");
  EXPECT_TRUE(e.tell_postmaster);
  EXPECT_NE(e.postmaster_text.find("isp"), std::string::npos);
  Decision d = decide_at(at(3, 9, 0));
  EXPECT_FALSE(d.call);
  EXPECT_FALSE(d.next);
  EXPECT_NE(d.reason.find("535 5.7.8 bad credentials"), std::string::npos);
  clear_stop(st);
  EXPECT_TRUE(decide_at(at(3, 9, 0)).call);
}

TEST_F(SchedTest, AStoppedPeerResumesAfterACallByHandSucceeds) {
  fail(FailureClass::auth_failed, at(0, 9, 0));
  EXPECT_FALSE(decide_at(at(0, 10, 0)).call);
  // The postmaster fixed the password and called by hand: it worked.
  succeed(at(0, 10, 0), at(0, 10, 5));
  EXPECT_FALSE(st.stopped);
  EXPECT_TRUE(decide_at(at(0, 11, 0)).call);
}

TEST_F(SchedTest, ConfigErrorStopsCalls) {
  OutcomeEffect e = fail(FailureClass::config_error, at(0, 9, 0));
  EXPECT_TRUE(e.tell_postmaster);
  EXPECT_TRUE(st.stopped);
  EXPECT_FALSE(decide_at(at(0, 12, 0)).call);
}

TEST_F(SchedTest, ProtocolErrorAndDropHoldThePeerNotTheRoute) {
  cfg.routes = {"5551234", "5559876"};
  fail(FailureClass::protocol_error, at(0, 9, 0));
  Decision d = decide_at(at(0, 9, 1));
  EXPECT_FALSE(d.call);  // another number would meet the same far end
  EXPECT_EQ(d.next, at(0, 9, 15));
  succeed(at(0, 9, 15), at(0, 9, 20));
  fail(FailureClass::dropped, at(0, 10, 0));
  EXPECT_EQ(decide_at(at(0, 10, 0)).next, at(0, 10, 1));
}

TEST_F(SchedTest, BackoffGrowsToTheCap) {
  cfg.retry.cap = minutes(20);
  SysTime t = at(0, 9, 0);
  std::vector<int64_t> waits;
  for (int i = 0; i < 5; ++i) {
    fail(FailureClass::busy, t);
    waits.push_back(
        std::chrono::duration_cast<minutes>(st.routes[0].not_before - t)
            .count());
    t = st.routes[0].not_before;
  }
  EXPECT_EQ(waits, (std::vector<int64_t>{3, 6, 12, 20, 20}));
  succeed(t, t + minutes(1));
  fail(FailureClass::busy, t + minutes(2));
  EXPECT_EQ(st.routes[0].not_before, t + minutes(5));  // reset by success
}

TEST_F(SchedTest, JitterIsBoundedAndRepeatableWithASeed) {
  cfg.retry.jitter = 0.2;
  std::vector<SysTime> first;
  for (int run = 0; run < 2; ++run) {
    st = PeerState{};
    rng.seed(7);
    std::vector<SysTime> got;
    for (int i = 0; i < 20; ++i) {
      st.routes.clear();
      fail(FailureClass::no_answer, at(0, 9, 0));
      SysTime nb = st.routes[0].not_before;
      EXPECT_GE(nb, at(0, 9, 12));  // 15m - 20%
      EXPECT_LE(nb, at(0, 9, 18));  // 15m + 20%
      got.push_back(nb);
    }
    if (run == 0)
      first = got;
    else
      EXPECT_EQ(first, got);
  }
}

TEST_F(SchedTest, AlternatesAreTriedInOrder) {
  cfg.routes = {"5551234", "5559876", "tcp:isp.example:25"};
  EXPECT_EQ(decide_at(at(0, 9, 0)).route, "5551234");
  fail(FailureClass::busy, at(0, 9, 0), 0);
  Decision d1 = decide_at(at(0, 9, 0));
  EXPECT_EQ(d1.route, "5559876");
  EXPECT_NE(d1.reason.find("trying alternate 5559876 (2 of 3)"),
            std::string::npos);
  fail(FailureClass::no_answer, at(0, 9, 1), 1);
  EXPECT_EQ(decide_at(at(0, 9, 1)).route, "tcp:isp.example:25");
  fail(FailureClass::no_carrier, at(0, 9, 1), 2);
  Decision none = decide_at(at(0, 9, 2));
  EXPECT_FALSE(none.call);
  EXPECT_EQ(none.reason,
            "all 3 routes backing off; next 5551234 (after busy) at 09:03");
  // The preferred number comes back first.
  EXPECT_EQ(decide_at(at(0, 9, 3)).route, "5551234");
}

// ---- Lifetimes ----

TEST(LifetimeTest, DaysAloneDoNotBounceAWeekendOfflinePeer) {
  PeerSchedule p = peer();
  p.windows = windows("Mon-Fri 08:00-18:00");
  p.lifetime.max_age = hours(48);
  p.lifetime.max_missed = 3;
  PeerState st;
  SysTime arrival = at(4, 19, 0);  // Friday evening
  note_time(p, st, arrival);
  note_time(p, st, at(7, 7, 59));  // Monday morning, 61 hours later
  uint32_t missed = missed_since(st, arrival);
  EXPECT_EQ(missed, 0u);
  LifetimeCheck c =
      check_lifetime(p.lifetime, arrival, missed, true, at(7, 7, 59));
  EXPECT_EQ(c.verdict, Verdict::keep);

  // Monday, Tuesday and Wednesday pass without a successful call.
  note_time(p, st, at(9, 18, 1));
  missed = missed_since(st, arrival);
  EXPECT_EQ(missed, 3u);
  c = check_lifetime(p.lifetime, arrival, missed, true, at(9, 18, 1));
  EXPECT_EQ(c.verdict, Verdict::give_up);
  EXPECT_NE(c.reason.find("3 missed call opportunities"), std::string::npos);
}

TEST(LifetimeTest, AWindowWithASuccessfulCallIsNotMissed) {
  PeerSchedule p = peer();
  p.windows = windows("Mon-Fri 08:00-18:00");
  PeerState st;
  note_time(p, st, at(0, 7, 0));
  st.last_success = at(0, 12, 0);
  note_time(p, st, at(1, 19, 0));
  EXPECT_EQ(missed_since(st, at(0, 7, 0)), 1u);  // only Tuesday's
  EXPECT_EQ(st.missed.back(), at(1, 18, 0));
}

TEST(LifetimeTest, AlwaysOpenPeerCountsDays) {
  PeerSchedule p = peer();
  PeerState st;
  note_time(p, st, at(0, 10, 0));
  note_time(p, st, at(3, 10, 0));
  EXPECT_EQ(missed_since(st, at(0, 10, 0)), 3u);  // three midnights
}

TEST(LifetimeTest, BothLimitsCountAndWarningComesOnce) {
  Lifetime lt;
  lt.max_age = hours(24 * 5);
  lt.max_missed = 3;
  lt.warn_after = hours(4);
  SysTime a = at(0, 9, 0);
  EXPECT_EQ(check_lifetime(lt, a, 0, false, a + hours(3)).verdict,
            Verdict::keep);
  LifetimeCheck w = check_lifetime(lt, a, 0, false, a + hours(4));
  EXPECT_EQ(w.verdict, Verdict::warn);
  EXPECT_EQ(w.retry_until, a + hours(24 * 5));
  EXPECT_EQ(check_lifetime(lt, a, 0, true, a + hours(5)).verdict,
            Verdict::keep);
  // Many missed windows but young: keep.  Old but few missed: keep.
  EXPECT_EQ(check_lifetime(lt, a, 9, true, a + hours(24)).verdict,
            Verdict::keep);
  EXPECT_EQ(check_lifetime(lt, a, 2, true, a + hours(24 * 9)).verdict,
            Verdict::keep);
  EXPECT_EQ(check_lifetime(lt, a, 3, true, a + hours(24 * 5)).verdict,
            Verdict::give_up);
  // Days only.
  lt.max_missed = 0;
  EXPECT_EQ(check_lifetime(lt, a, 0, true, a + hours(24 * 5)).verdict,
            Verdict::give_up);
}

TEST(ClockTest, ManualAndScaledClocks) {
  ManualClock m(at(0, 9, 0));
  m.advance(hours(49));
  EXPECT_EQ(m.now(), at(2, 10, 0));
  m.set(at(6, 0, 0));
  EXPECT_EQ(m.now(), at(6, 0, 0));
  ScaledClock s(at(0, 0, 0), 3600.0);  // an hour per real second
  auto real = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - real <
         std::chrono::milliseconds(20)) {
  }
  EXPECT_GE(s.now(), at(0, 0, 0) + seconds(72));  // >= 20 ms * 3600
  EXPECT_LT(s.now(), at(1, 0, 0));  // generous: the machine is busy
}

TEST(FailureClassTest, NamesRoundTrip) {
  for (int i = 0; i < kFailureClasses; ++i) {
    auto c = static_cast<FailureClass>(i);
    EXPECT_EQ(parse_failure_class(to_string(c)), c);
  }
  EXPECT_FALSE(parse_failure_class("gremlins"));
}

TEST(FailureClassTest, ModemResultsMapToClasses) {
  using modem::ModemErrc;
  EXPECT_EQ(classify_modem_error(ModemErrc::busy), FailureClass::busy);
  EXPECT_EQ(classify_modem_error(ModemErrc::no_dialtone),
            FailureClass::no_dialtone);
  EXPECT_EQ(classify_modem_error(ModemErrc::delayed), FailureClass::delayed);
  EXPECT_EQ(classify_modem_error(ModemErrc::blacklisted),
            FailureClass::blacklisted);
  EXPECT_EQ(classify_modem_error(ModemErrc::not_responding),
            FailureClass::modem_not_responding);
  EXPECT_EQ(classify_modem_error(ModemErrc::port_locked),
            FailureClass::port_locked);
  EXPECT_EQ(classify_modem_error(ModemErrc::carrier_lost),
            FailureClass::dropped);
  EXPECT_FALSE(classify_modem_error(ModemErrc::no_call));
  EXPECT_FALSE(classify_modem_error(
      std::make_error_code(std::errc::connection_refused)));
}

TEST_F(SchedTest, WhyLineForFerryctl) {
  cfg.windows = windows("Mon-Fri 18:00-07:30");
  EXPECT_EQ(why_line(cfg, decide_at(at(5, 10, 0)), at(5, 10, 0)),
            "isp: not calling: outside the call window until Mon 18:00; "
            "next call Mon 18:00");
  q = queued(1, 100, at(1, 9, 0), 1);
  EXPECT_EQ(why_line(cfg, decide_at(at(1, 19, 0)), at(1, 19, 0)),
            "isp: calling now (5551234): urgent message queued (priority 1)");
}

}  // namespace
}  // namespace ferry::gw
