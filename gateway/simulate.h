// A week of traffic in seconds: the scheduler's decisions run against a
// trace of message arrivals and a simulated modem, on a simulated clock.
//
// The simulation uses the real decision engine (gateway/schedule.h) and the
// real lifetime rules; only the modem and the line are models: each call
// attempt's outcome is taken from a script ("busy busy ok") and, when the
// script is used up, drawn at random with the configured probabilities
// from a seeded generator, so a run is repeatable.  A connected call lasts
// the set-up time plus the queued bytes at the line rate, up to the peer's
// longest call.  One modem line serves every peer: one call at a time.
//
// The trace format, one arrival per line ('#' starts a comment):
//   TIME PEER BYTES [PRIORITY]
// TIME is an offset from the start of the simulation ("2d9h15m", "0") or an
// absolute UTC time "2026-12-07T09:15:00Z".  BYTES takes K/M suffixes.
//
// The simulation file (ferry-simulate's configuration) is INI-style:
//   [simulation] start = 2026-12-07T00:00:00Z, days = 7, tick = 1m,
//                seed = 1
//   [modem]      busy = 0.2, no_answer = 0.1, no_carrier, no_dialtone,
//                not_responding, dropped (probabilities), script = busy ok,
//                bytes_per_second = 3000, setup = 45s
//   [schedule]   defaults for every peer (set_schedule_key() keys)
//   [peer NAME]  that peer's schedule keys
//
// Concurrency: plain functions over values; no shared state.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/clock.h"
#include "gateway/schedule.h"

namespace ferry::gw {

struct Arrival {
  SysTime time{};
  std::string peer;
  uint64_t bytes = 0;
  int priority = 0;
};

// Parses a trace (see above), with times relative to `start`.  Returns
// nullopt and sets `error` ("line 7: ...") on a bad line.
std::optional<std::vector<Arrival>> parse_trace(std::string_view text,
                                                SysTime start,
                                                std::string& error);

// One scripted outcome: "ok", a FailureClass name, or "delayed=10m"
// (a modem delay for delayed/blacklisted).
struct ScriptedOutcome {
  std::optional<FailureClass> failure;  // none: the call works
  std::optional<std::chrono::seconds> modem_delay;
};
std::optional<std::vector<ScriptedOutcome>> parse_script(std::string_view text,
                                                         std::string& error);

struct ModemModel {
  // Probabilities of each failure per call attempt after the script.
  double busy = 0, no_answer = 0, no_carrier = 0, no_dialtone = 0,
         not_responding = 0, dropped = 0;
  std::vector<ScriptedOutcome> script;  // used first, in order
  double bytes_per_second = 3000;       // 28800 bit/s with compression
  std::chrono::seconds setup{45};       // dial, handshake, EHLO, TLS
};

struct SimConfig {
  SysTime start{};
  std::chrono::seconds duration = std::chrono::hours(24 * 7);
  std::chrono::seconds tick{60};  // how often the scheduler looks
  uint64_t seed = 1;
  ModemModel modem;
  std::vector<PeerSchedule> peers;
};

// Parses a simulation file (see above).  Returns nullopt and sets `error`
// naming the line and key on failure.
std::optional<SimConfig> parse_sim_config(
    std::string_view text, std::string& error,
    const std::string& zoneinfo_dir = "/usr/share/zoneinfo");

struct SimMessage {
  Arrival arrival;
  std::optional<SysTime> delivered;
  std::optional<SysTime> bounced;
  bool warned = false;
  uint32_t attempts = 0;  // call attempts to its peer while it waited
};

struct SimReport {
  uint64_t calls = 0;  // dial attempts
  uint64_t connected_calls = 0;
  double connected_minutes = 0;
  uint64_t outcomes[kFailureClasses] = {};
  uint64_t delivered = 0, bounced = 0, warned = 0, pending = 0;
  uint64_t postmaster_notices = 0;
  // Waits of delivered messages, arrival to delivery (seconds).
  double wait_median = 0, wait_p95 = 0, wait_max = 0;
  std::vector<SimMessage> messages;  // in trace order
  std::vector<std::string> log;      // one line per call and notice
  // The last decision per peer at the end ("why PEER").
  std::vector<std::pair<std::string, Decision>> last_decisions;
  std::string summary() const;  // a few lines for people
};

SimReport simulate(const SimConfig& cfg, const std::vector<Arrival>& trace);

// A trace for demonstrations: `per_day` messages per peer on working days
// between 08:00 and 18:00 UTC, sizes 1-64 KiB, one in 20 urgent.
std::vector<Arrival> synthetic_trace(const SimConfig& cfg, int per_day,
                                     uint64_t seed);

}  // namespace ferry::gw
