// The scheduler's memory across restarts: per peer its failures and
// backoff, its missed call opportunities and its recent calls; per modem
// line its backoff.  ferryd keeps them in one JSON file next to the spool
// (`<spool>/scheduler.json`), rewritten whenever they change, so that a
// restart neither redials a peer that is backing off nor forgets the
// missed opportunities that a message's lifetime counts.
//
// Deliberately NOT kept: a peer stopped after an authentication or
// configuration failure, and a modem taken out of service.  The usual
// cure for both is the postmaster's change to the configuration or the
// hardware followed by a restart, so a restart clears them.
//
// Times are stored as microseconds since the epoch of the scheduler's
// clock.  With --clock-scale that clock is not the wall clock, so ferryd
// neither loads nor saves the file then.
//
// Errors: load() of a missing file is an empty state, not an error; a
// damaged file is an error naming the file (ferryd logs it and starts
// with an empty state rather than refusing to run).  save() writes a
// temporary file, syncs it and renames it over the old one.
//
// Concurrency: plain functions and values; the call manager uses them on
// its own thread.
#pragma once

#include <map>
#include <string>

#include "gateway/json.h"
#include "gateway/schedule.h"

namespace ferry::gw {

struct SchedulerMemory {
  std::map<std::string, PeerState> peers;  // by [peer NAME]
  std::map<std::string, LineState> lines;  // by [modem NAME]
};

json::Value to_json(const SchedulerMemory& m);
// Unknown members are ignored; members of the wrong type are an error.
bool from_json(const json::Value& v, SchedulerMemory& m, std::string& error);

bool load_scheduler_memory(const std::string& path, SchedulerMemory& m,
                           std::string& error);
bool save_scheduler_memory(const std::string& path, const std::string& text,
                           std::string& error);

}  // namespace ferry::gw
