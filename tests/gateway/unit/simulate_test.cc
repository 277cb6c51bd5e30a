#include "gateway/simulate.h"

#include <gtest/gtest.h>

namespace ferry::gw {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

const SysTime kMonday = SysTime(seconds(1796601600));  // 2026-12-07 00:00Z

SimConfig config(std::string_view text) {
  std::string error;
  auto cfg = parse_sim_config(text, error);
  EXPECT_TRUE(cfg) << error;
  return cfg ? *cfg : SimConfig{};
}

std::vector<Arrival> trace(std::string_view text) {
  std::string error;
  auto t = parse_trace(text, kMonday, error);
  EXPECT_TRUE(t) << error;
  return t ? *t : std::vector<Arrival>{};
}

// A branch office reached only on weekdays, 08:00-18:00: mail written on
// Friday evening waits the weekend (longer than the 2-day lifetime) and
// must be delivered on Monday, not bounced.
TEST(SimulateTest, WeekendOfflinePeerBouncesNothing) {
  SimConfig cfg = config(R"(
[simulation]
days = 9
[peer branch]
windows = Mon-Fri 08:00-18:00
lifetime = 2d
lifetime_missed = 2
warn_after = 1d
)");
  SimReport r = simulate(cfg, trace("4d19h branch 20K\n4d20h branch 5K\n"));
  EXPECT_EQ(r.bounced, 0u) << r.summary();
  EXPECT_EQ(r.delivered, 2u) << r.summary();
  ASSERT_TRUE(r.messages[0].delivered);
  EXPECT_GE(*r.messages[0].delivered, kMonday + hours(24 * 7 + 8));
  EXPECT_LT(*r.messages[0].delivered, kMonday + hours(24 * 7 + 9));
  EXPECT_TRUE(r.messages[0].warned);  // over a day late: the sender hears
}

// The same peer, but every call fails: the weekend still does not count,
// the missed weekday windows do, and the mail comes back after both
// limits.
TEST(SimulateTest, MissedWindowsThenBounce) {
  SimConfig cfg = config(R"(
[simulation]
days = 9
[modem]
no_answer = 1
[peer branch]
windows = Mon-Fri 08:00-18:00
lifetime = 2d
lifetime_missed = 2
)");
  SimReport r = simulate(cfg, trace("4d19h branch 20K\n"));
  EXPECT_EQ(r.bounced, 1u) << r.summary();
  ASSERT_TRUE(r.messages[0].bounced);
  // Monday's and Tuesday's windows missed: returned Tuesday 18:00.
  EXPECT_EQ(*r.messages[0].bounced, kMonday + hours(24 * 8 + 18));
  EXPECT_EQ(r.outcomes[static_cast<int>(FailureClass::no_answer)], r.calls);
}

TEST(SimulateTest, BusyTwiceThenAnswerDeliversOnTheThirdAttempt) {
  SimConfig cfg = config(R"(
[simulation]
days = 1
[modem]
script = busy busy ok
[peer isp]
retry_jitter = 0
)");
  SimReport r = simulate(cfg, trace("9h isp 10K\n"));
  EXPECT_EQ(r.calls, 3u) << r.summary();
  EXPECT_EQ(r.outcomes[static_cast<int>(FailureClass::busy)], 2u);
  EXPECT_EQ(r.connected_calls, 1u);
  ASSERT_TRUE(r.messages[0].delivered);
  EXPECT_EQ(r.messages[0].attempts, 3u);
  // 09:00 busy (15 s on the line, then 3m), 09:04 busy (then 6m), 09:11
  // answers (the scheduler looks once a minute); the call takes the set-up
  // time plus 10 KiB at 3000 bytes/s.
  SysTime answered = kMonday + hours(9) + minutes(11);
  EXPECT_GE(*r.messages[0].delivered, answered + seconds(45));
  EXPECT_LE(*r.messages[0].delivered, answered + seconds(50));
}

TEST(SimulateTest, AuthFailureStopsCallsAndTellsPostmasterOnce) {
  SimConfig cfg = config(R"(
[simulation]
days = 2
[modem]
script = auth_failed
[peer isp]
)");
  SimReport r = simulate(cfg, trace("1h isp 1K\n5h isp 1K\n"));
  EXPECT_EQ(r.calls, 1u);
  EXPECT_EQ(r.postmaster_notices, 1u);
  EXPECT_EQ(r.pending, 2u);
  ASSERT_EQ(r.last_decisions.size(), 1u);
  EXPECT_NE(r.last_decisions[0].second.reason.find("calls stopped"),
            std::string::npos);
}

TEST(SimulateTest, ModemDelayIsRespected) {
  SimConfig cfg = config(R"(
[simulation]
days = 1
[modem]
script = delayed=20m ok
[peer isp]
)");
  SimReport r = simulate(cfg, trace("9h isp 1K\n"));
  EXPECT_EQ(r.calls, 2u);
  ASSERT_TRUE(r.messages[0].delivered);
  EXPECT_GE(*r.messages[0].delivered, kMonday + hours(9) + minutes(20));
  EXPECT_LT(*r.messages[0].delivered, kMonday + hours(9) + minutes(22));
}

// A busy week for two peers on one modem: runs in well under a second,
// is repeatable with its seed, and every message is accounted for.
TEST(SimulateTest, AWeekOfRandomTrafficIsFastAndRepeatable) {
  SimConfig cfg = config(R"(
[simulation]
days = 7
seed = 11
[modem]
busy = 0.2
no_answer = 0.1
dropped = 0.05
[schedule]
min_messages = 10
max_age = 3h
poll = 08:00 13:00
[peer isp]
windows = always
routes = 5551234 5559876
[peer branch]
windows = Mon-Fri 18:00-07:30, Sat 00:00-24:00
zone = +01:00
)");
  std::vector<Arrival> t = synthetic_trace(cfg, 40, 3);
  ASSERT_EQ(t.size(), 2u * 5 * 40);
  auto started = std::chrono::steady_clock::now();
  SimReport a = simulate(cfg, t);
  EXPECT_LT(std::chrono::steady_clock::now() - started,
            std::chrono::seconds(20));
  SimReport b = simulate(cfg, t);
  EXPECT_EQ(a.summary(), b.summary());
  EXPECT_EQ(a.log, b.log);
  EXPECT_EQ(a.delivered + a.bounced + a.pending, t.size());
  EXPECT_GT(a.delivered, t.size() * 9 / 10) << a.summary();
  EXPECT_GT(a.outcomes[static_cast<int>(FailureClass::busy)], 0u);
  EXPECT_GT(a.connected_minutes, 0);
  EXPECT_GT(a.wait_p95, a.wait_median * 0.999);
  EXPECT_GE(a.wait_max, a.wait_p95);
}

TEST(SimulateTest, BadInputsNameTheLine) {
  std::string error;
  EXPECT_FALSE(parse_trace("1h isp 1K\nsoon isp 1K\n", kMonday, error));
  EXPECT_EQ(error.rfind("line 2:", 0), 0u) << error;
  EXPECT_FALSE(parse_sim_config("[peer isp]\nwindows = Mon 9-5\n", error));
  EXPECT_EQ(error.rfind("line 2: windows:", 0), 0u) << error;
  EXPECT_FALSE(
      parse_sim_config("[modem]\nscript = gremlins\n[peer a]\n", error));
  EXPECT_NE(error.find("gremlins"), std::string::npos);
  auto t =
      parse_trace("# comment\n2026-12-08T10:00:00Z isp 2M 3\n", kMonday, error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->at(0).time, kMonday + hours(34));
  EXPECT_EQ(t->at(0).bytes, 2u << 20);
  EXPECT_EQ(t->at(0).priority, 3);
}

}  // namespace
}  // namespace ferry::gw
