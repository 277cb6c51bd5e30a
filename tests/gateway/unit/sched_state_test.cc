#include "gateway/sched_state.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace ferry::gw {
namespace {

SysTime at(int64_t s) { return SysTime(std::chrono::seconds(s)); }

SchedulerMemory sample() {
  SchedulerMemory m;
  PeerState& p = m.peers["branch"];
  p.routes.resize(2);
  p.routes[1].failures = 3;
  p.routes[1].not_before = at(1800000100);
  p.routes[1].last_failure = FailureClass::busy;
  p.routes[1].last_reply = "BUSY";
  p.failures = 4;
  p.not_before = at(1800000200);
  p.last_failure = FailureClass::no_answer;
  p.last_reply = "NO ANSWER";
  p.last_failure_time = at(1800000050);
  p.last_attempt = at(1800000040);
  p.last_success = at(1799990000);
  p.connected_starts = {at(1799990000), at(1799995000)};
  p.missed = {at(1799900000)};
  p.windows_checked = at(1800000060);
  p.stopped = true;  // not kept
  p.stopped_reason = "auth failed";
  LineState& l = m.lines["m0"];
  l.name = "m0";
  l.down_since = at(1800000000);
  l.not_before = at(1800000300);
  l.failures = 2;
  l.last_failure = FailureClass::no_dialtone;
  l.out_of_service = true;  // not kept
  return m;
}

TEST(SchedState, RoundTripKeepsBackoffAndMissedButNotAStop) {
  SchedulerMemory in = sample();
  SchedulerMemory out;
  std::string error;
  ASSERT_TRUE(from_json(to_json(in), out, error)) << error;
  const PeerState& p = out.peers.at("branch");
  ASSERT_EQ(p.routes.size(), 2u);
  EXPECT_EQ(p.routes[1].failures, 3u);
  EXPECT_EQ(p.routes[1].not_before, at(1800000100));
  EXPECT_EQ(p.routes[1].last_failure, FailureClass::busy);
  EXPECT_EQ(p.failures, 4u);
  EXPECT_EQ(p.not_before, at(1800000200));
  EXPECT_EQ(p.last_failure, FailureClass::no_answer);
  EXPECT_EQ(p.last_reply, "NO ANSWER");
  EXPECT_EQ(p.last_attempt, at(1800000040));
  EXPECT_FALSE(p.last_connected_end.has_value());
  EXPECT_EQ(p.connected_starts.size(), 2u);
  EXPECT_EQ(p.missed.front(), at(1799900000));
  EXPECT_EQ(p.windows_checked, at(1800000060));
  EXPECT_FALSE(p.stopped);
  const LineState& l = out.lines.at("m0");
  EXPECT_EQ(l.down_since, at(1800000000));
  EXPECT_EQ(l.failures, 2u);
  EXPECT_EQ(l.last_failure, FailureClass::no_dialtone);
  EXPECT_FALSE(l.out_of_service);
}

class SchedStateFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-sched-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/scheduler.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(SchedStateFile, MissingFileIsAnEmptyMemory) {
  SchedulerMemory m = sample();
  std::string error;
  EXPECT_TRUE(load_scheduler_memory(path_, m, error)) << error;
  EXPECT_TRUE(m.peers.empty());
}

TEST_F(SchedStateFile, SavedFileLoadsBackAndLeavesNoTemporary) {
  std::string error;
  ASSERT_TRUE(save_scheduler_memory(path_, json::write(to_json(sample())),
                                    error))
      << error;
  EXPECT_FALSE(std::filesystem::exists(path_ + ".new"));
  SchedulerMemory m;
  ASSERT_TRUE(load_scheduler_memory(path_, m, error)) << error;
  EXPECT_EQ(m.peers.at("branch").not_before, at(1800000200));
}

TEST_F(SchedStateFile, DamagedFileIsAnErrorNamingItAndGivesEmptyMemory) {
  std::ofstream(path_) << "{\"version\":1,\"peers\":{\"b\":{\"failures\":"
                          "\"many\"}}}";
  SchedulerMemory m = sample();
  std::string error;
  EXPECT_FALSE(load_scheduler_memory(path_, m, error));
  EXPECT_NE(error.find(path_), std::string::npos) << error;
  EXPECT_NE(error.find("failures"), std::string::npos) << error;
  EXPECT_TRUE(m.peers.empty());
  std::ofstream(path_) << "not json";
  EXPECT_FALSE(load_scheduler_memory(path_, m, error));
}

}  // namespace
}  // namespace ferry::gw
