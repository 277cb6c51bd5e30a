#include "gateway/simulate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

namespace ferry::gw {
namespace {

using std::chrono::seconds;

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t start = i;
    while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

std::vector<std::string_view> lines_of(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string_view::npos) {
      if (start < s.size()) out.push_back(s.substr(start));
      break;
    }
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

std::string_view strip_comment(std::string_view l) {
  size_t hash = l.find('#');
  if (hash != std::string_view::npos) l = l.substr(0, hash);
  return trim(l);
}

// Days since 1970-01-01 of a proleptic Gregorian date (the usual
// era-based computation).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// "2026-12-07T09:15:00Z" or "2026-12-07T09:15Z" (UTC only).
std::optional<SysTime> parse_iso(std::string_view s) {
  int y, mo, d, h, mi, sec = 0;
  std::string str(s);
  char z = 0;
  int n = std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h,
                      &mi, &sec, &z);
  if (n != 7) {
    sec = 0;
    n = std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d%c", &y, &mo, &d, &h, &mi,
                    &z);
    if (n != 6) return std::nullopt;
  }
  if (z != 'Z' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
      sec > 60)
    return std::nullopt;
  int64_t days =
      days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  return SysTime(seconds(days * 86400 + h * 3600 + mi * 60 + sec));
}

std::string fmt_wait(double secs) {
  return format_duration(seconds(static_cast<int64_t>(std::llround(secs))));
}

// How long a failed attempt holds the line, roughly.
seconds attempt_time(FailureClass c) {
  switch (c) {
    case FailureClass::busy:
      return seconds(15);
    case FailureClass::no_answer:
      return seconds(60);
    case FailureClass::no_carrier:
      return seconds(50);
    case FailureClass::modem_not_responding:
      return seconds(10);
    default:
      return seconds(5);
  }
}

std::string modem_reply(FailureClass c) {
  switch (c) {
    case FailureClass::busy:
      return "BUSY";
    case FailureClass::no_answer:
      return "NO ANSWER";
    case FailureClass::no_carrier:
      return "NO CARRIER";
    case FailureClass::no_dialtone:
      return "NO DIALTONE";
    case FailureClass::delayed:
      return "DELAYED";
    case FailureClass::blacklisted:
      return "BLACKLISTED";
    case FailureClass::modem_not_responding:
      return "(no response)";
    case FailureClass::dropped:
      return "NO CARRIER (during the session)";
    case FailureClass::auth_failed:
      return "535 5.7.8 authentication failed";
    case FailureClass::protocol_error:
      return "421 4.3.0 session error";
    default:
      return std::string(to_string(c));
  }
}

}  // namespace

std::optional<std::vector<Arrival>> parse_trace(std::string_view text,
                                                SysTime start,
                                                std::string& error) {
  std::vector<Arrival> out;
  int n = 0;
  for (std::string_view raw : lines_of(text)) {
    ++n;
    std::string_view l = strip_comment(raw);
    if (l.empty()) continue;
    auto fail = [&](const std::string& why) {
      error = "line " + std::to_string(n) + ": " + why;
      return std::nullopt;
    };
    std::vector<std::string_view> w = words(l);
    if (w.size() < 3 || w.size() > 4)
      return fail("expected TIME PEER BYTES [PRIORITY]");
    Arrival a;
    if (auto iso = parse_iso(w[0]))
      a.time = *iso;
    else if (auto d = parse_duration(w[0]))
      a.time = start + *d;
    else
      return fail("bad time \"" + std::string(w[0]) + "\"");
    a.peer = std::string(w[1]);
    auto size = parse_size(w[2]);
    if (!size) return fail("bad size \"" + std::string(w[2]) + "\"");
    a.bytes = *size;
    if (w.size() == 4) {
      std::string p(w[3]);
      char* end = nullptr;
      long v = std::strtol(p.c_str(), &end, 10);
      if (*end != '\0' || v < -1000 || v > 1000)
        return fail("bad priority \"" + p + "\"");
      a.priority = static_cast<int>(v);
    }
    out.push_back(std::move(a));
  }
  return out;
}

std::optional<std::vector<ScriptedOutcome>> parse_script(std::string_view text,
                                                         std::string& error) {
  std::vector<ScriptedOutcome> out;
  for (std::string_view w : words(text)) {
    ScriptedOutcome o;
    std::string_view name = w;
    size_t eq = w.find('=');
    if (eq != std::string_view::npos) {
      name = w.substr(0, eq);
      auto d = parse_duration(w.substr(eq + 1));
      if (!d) {
        error = "script: bad delay in \"" + std::string(w) + "\"";
        return std::nullopt;
      }
      o.modem_delay = *d;
    }
    if (name != "ok") {
      o.failure = parse_failure_class(name);
      if (!o.failure) {
        error = "script: unknown outcome \"" + std::string(name) +
                "\" (ok or a failure class such as busy)";
        return std::nullopt;
      }
    }
    out.push_back(o);
  }
  return out;
}

std::optional<SimConfig> parse_sim_config(std::string_view text,
                                          std::string& error,
                                          const std::string& zoneinfo_dir) {
  struct Kv {
    int line;
    std::string key, value;
  };
  SimConfig cfg;
  cfg.start = *parse_iso("2026-12-07T00:00:00Z");  // a Monday
  std::vector<Kv> defaults;
  std::vector<std::pair<std::string, std::vector<Kv>>> peers;
  std::string section;
  int n = 0;
  auto fail = [&](int line, const std::string& why) {
    error = "line " + std::to_string(line) + ": " + why;
    return std::nullopt;
  };
  for (std::string_view raw : lines_of(text)) {
    ++n;
    std::string_view l = strip_comment(raw);
    if (l.empty()) continue;
    if (l.front() == '[') {
      if (l.back() != ']') return fail(n, "bad section header");
      std::vector<std::string_view> w = words(l.substr(1, l.size() - 2));
      if (w.size() == 2 && w[0] == "peer") {
        section = "peer";
        peers.push_back({std::string(w[1]), {}});
      } else if (w.size() == 1 && (w[0] == "simulation" || w[0] == "modem" ||
                                   w[0] == "schedule")) {
        section = std::string(w[0]);
      } else {
        return fail(n, "unknown section " + std::string(l));
      }
      continue;
    }
    size_t eq = l.find('=');
    if (eq == std::string_view::npos) return fail(n, "expected key = value");
    std::string key(trim(l.substr(0, eq)));
    std::string value(trim(l.substr(eq + 1)));
    auto prob = [&](double& out) -> bool {
      char* end = nullptr;
      out = std::strtod(value.c_str(), &end);
      return !value.empty() && *end == '\0' && out >= 0 && out <= 1;
    };
    if (section == "simulation") {
      if (key == "start") {
        auto t = parse_iso(value);
        if (!t) return fail(n, "start: expected 2026-12-07T00:00:00Z");
        cfg.start = *t;
      } else if (key == "days" || key == "duration") {
        auto d =
            key == "days" ? parse_duration(value + "d") : parse_duration(value);
        if (!d || d->count() <= 0) return fail(n, key + ": bad value");
        cfg.duration = *d;
      } else if (key == "tick") {
        auto d = parse_duration(value);
        if (!d || d->count() <= 0) return fail(n, "tick: bad duration");
        cfg.tick = *d;
      } else if (key == "seed") {
        char* end = nullptr;
        cfg.seed = std::strtoull(value.c_str(), &end, 10);
        if (value.empty() || *end != '\0') return fail(n, "seed: bad number");
      } else {
        return fail(n, "unknown key " + key + " in [simulation]");
      }
    } else if (section == "modem") {
      ModemModel& m = cfg.modem;
      double* p = key == "busy"             ? &m.busy
                  : key == "no_answer"      ? &m.no_answer
                  : key == "no_carrier"     ? &m.no_carrier
                  : key == "no_dialtone"    ? &m.no_dialtone
                  : key == "not_responding" ? &m.not_responding
                  : key == "dropped"        ? &m.dropped
                                            : nullptr;
      if (p) {
        if (!prob(*p)) return fail(n, key + ": expected a probability 0..1");
      } else if (key == "script") {
        auto s = parse_script(value, error);
        if (!s) return fail(n, error);
        m.script = *s;
      } else if (key == "bytes_per_second") {
        char* end = nullptr;
        m.bytes_per_second = std::strtod(value.c_str(), &end);
        if (value.empty() || *end != '\0' || m.bytes_per_second <= 0)
          return fail(n, "bytes_per_second: bad number");
      } else if (key == "setup") {
        auto d = parse_duration(value);
        if (!d) return fail(n, "setup: bad duration");
        m.setup = *d;
      } else {
        return fail(n, "unknown key " + key + " in [modem]");
      }
    } else if (section == "schedule") {
      defaults.push_back({n, key, value});
    } else if (section == "peer") {
      peers.back().second.push_back({n, key, value});
    } else {
      return fail(n, "key outside a section");
    }
  }

  // Peers: the [schedule] defaults, then their own keys.
  for (auto& [name, kvs] : peers) {
    PeerSchedule p;
    p.name = name;
    for (const auto* list : {&defaults, &kvs})
      for (const Kv& kv : *list)
        if (!set_schedule_key(p, kv.key, kv.value, error, zoneinfo_dir))
          return fail(kv.line, error);
    cfg.peers.push_back(std::move(p));
  }
  if (cfg.peers.empty()) {
    error = "no [peer NAME] section";
    return std::nullopt;
  }
  return cfg;
}

SimReport simulate(const SimConfig& cfg, const std::vector<Arrival>& trace) {
  SimReport r;
  ManualClock clock(cfg.start);  // the simulation reads time only here
  std::mt19937_64 outcome_rng(cfg.seed);
  std::mt19937_64 jitter_rng(cfg.seed * 7919 + 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const ModemModel& modem = cfg.modem;

  size_t np = cfg.peers.size();
  std::vector<PeerState> states(np);
  std::map<std::string, LineState> lines;
  for (size_t i = 0; i < np; ++i) {
    states[i].routes.resize(std::max<size_t>(1, cfg.peers[i].routes.size()));
    lines[cfg.peers[i].line].name = cfg.peers[i].line;
  }
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < np; ++i) index[cfg.peers[i].name] = i;

  r.messages.reserve(trace.size());
  for (const Arrival& a : trace) r.messages.push_back({a});
  std::vector<size_t> order(trace.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return trace[a].time < trace[b].time;
  });
  std::vector<std::vector<size_t>> pending(np);
  std::vector<Decision> last(np);

  size_t next_arrival = 0;
  size_t script_pos = 0;
  size_t rr = 0;
  SysTime busy_until = cfg.start;
  const SysTime end = cfg.start + cfg.duration;

  for (SysTime t = cfg.start; t < end;) {
    clock.set(t);
    SysTime now = clock.now();

    // Arrivals up to now.
    while (next_arrival < order.size() &&
           trace[order[next_arrival]].time <= now) {
      size_t m = order[next_arrival++];
      auto it = index.find(trace[m].peer);
      if (it == index.end()) {
        r.log.push_back("unknown peer " + trace[m].peer + ": message " +
                        std::to_string(m) + " ignored");
        continue;
      }
      pending[it->second].push_back(m);
    }

    // Lifetimes: warn, or give up.
    for (size_t p = 0; p < np; ++p) {
      note_time(cfg.peers[p], states[p], now);
      auto& list = pending[p];
      for (size_t k = 0; k < list.size();) {
        SimMessage& m = r.messages[list[k]];
        LifetimeCheck c = check_lifetime(
            cfg.peers[p].lifetime, m.arrival.time,
            missed_since(states[p], m.arrival.time), m.warned, now);
        if (c.verdict == Verdict::warn) {
          m.warned = true;
          r.warned++;
        } else if (c.verdict == Verdict::give_up) {
          m.bounced = now;
          r.bounced++;
          r.log.push_back(format_local(cfg.peers[p].zone, now) + " peer=" +
                          cfg.peers[p].name + " bounce: " + c.reason);
          list.erase(list.begin() + static_cast<std::ptrdiff_t>(k));
          continue;
        }
        ++k;
      }
    }

    // One modem: at most one call at a time, peers in turn.
    if (now >= busy_until) {
      for (size_t k = 0; k < np; ++k) {
        size_t p = (rr + k) % np;
        const PeerSchedule& pc = cfg.peers[p];
        PeerState& st = states[p];
        LineState& line = lines[pc.line];
        QueueSummary q;
        for (size_t m : pending[p]) {
          const Arrival& a = r.messages[m].arrival;
          q.messages++;
          q.bytes += a.bytes;
          if (!q.oldest || a.time < *q.oldest) q.oldest = a.time;
          q.max_priority = std::max(q.max_priority, a.priority);
        }
        Decision d = decide(pc, st, line, q, now);
        last[p] = d;
        if (!d.call) continue;

        // The attempt's outcome: the script first, then chance.
        ScriptedOutcome o;
        if (script_pos < modem.script.size()) {
          o = modem.script[script_pos++];
        } else {
          double u = unit(outcome_rng);
          std::pair<double, FailureClass> table[] = {
              {modem.busy, FailureClass::busy},
              {modem.no_answer, FailureClass::no_answer},
              {modem.no_carrier, FailureClass::no_carrier},
              {modem.no_dialtone, FailureClass::no_dialtone},
              {modem.not_responding, FailureClass::modem_not_responding},
              {modem.dropped, FailureClass::dropped}};
          for (auto& [prob, cls] : table) {
            if (u < prob) {
              o.failure = cls;
              break;
            }
            u -= prob;
          }
        }
        r.calls++;
        for (size_t m : pending[p]) r.messages[m].attempts++;

        CallOutcome out;
        out.route_index = d.route_index;
        out.start = now;
        out.failure = o.failure;
        out.modem_delay = o.modem_delay;
        bool talks = !o.failure || *o.failure == FailureClass::dropped;
        if (talks) {
          // Send the batch, most urgent first, within the longest call; a
          // dropped line loses the second half.
          out.connected = true;
          auto& list = pending[p];
          std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
            return r.messages[a].arrival.priority >
                   r.messages[b].arrival.priority;
          });
          size_t can = o.failure ? list.size() / 2 : list.size();
          double elapsed = static_cast<double>(modem.setup.count());
          double limit = static_cast<double>(pc.limits.max_call.count());
          size_t sent = 0;
          for (; sent < can; ++sent) {
            double cost =
                static_cast<double>(r.messages[list[sent]].arrival.bytes) /
                modem.bytes_per_second;
            if (elapsed + cost > limit && sent > 0) break;
            elapsed += cost;
            r.messages[list[sent]].delivered =
                now + seconds(static_cast<int64_t>(std::ceil(elapsed)));
            r.delivered++;
          }
          list.erase(list.begin(),
                     list.begin() + static_cast<std::ptrdiff_t>(sent));
          out.end = now + seconds(static_cast<int64_t>(std::ceil(elapsed)));
          r.connected_calls++;
          r.connected_minutes += elapsed / 60.0;
          out.reply = o.failure ? modem_reply(*o.failure) : "221 2.0.0 bye";
        } else {
          out.end = now + attempt_time(*o.failure);
          out.reply = modem_reply(*o.failure);
        }
        if (o.failure) r.outcomes[static_cast<int>(*o.failure)]++;

        OutcomeEffect e = record_outcome(pc, st, line, out, jitter_rng);
        r.log.push_back(format_local(pc.zone, now) + " " + e.log + " why=\"" +
                        d.reason + "\"");
        if (e.tell_postmaster) {
          r.postmaster_notices++;
          r.log.push_back(format_local(pc.zone, now) +
                          " postmaster: " + e.postmaster_text);
        }
        busy_until = out.end;
        rr = p + 1;
        break;
      }
    }

    t += cfg.tick;
    if (busy_until > t) t = busy_until;
  }

  // What is left, and the waits.
  std::vector<double> waits;
  for (const SimMessage& m : r.messages) {
    if (m.delivered)
      waits.push_back(
          std::chrono::duration<double>(*m.delivered - m.arrival.time).count());
    else if (!m.bounced)
      r.pending++;
  }
  std::sort(waits.begin(), waits.end());
  if (!waits.empty()) {
    auto rank = [&](double q) {
      size_t k = static_cast<size_t>(std::ceil(q * waits.size()));
      return waits[std::min(waits.size() - 1, k > 0 ? k - 1 : 0)];
    };
    r.wait_median = rank(0.5);
    r.wait_p95 = rank(0.95);
    r.wait_max = waits.back();
  }
  for (size_t p = 0; p < np; ++p)
    r.last_decisions.emplace_back(cfg.peers[p].name, last[p]);
  return r;
}

std::string SimReport::summary() const {
  std::string s;
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "calls: %llu attempted, %llu connected, %.1f minutes "
                "connected\n",
                static_cast<unsigned long long>(calls),
                static_cast<unsigned long long>(connected_calls),
                connected_minutes);
  s += buf;
  std::string fails;
  for (int i = 0; i < kFailureClasses; ++i)
    if (outcomes[i])
      fails += " " + std::string(to_string(static_cast<FailureClass>(i))) +
               "=" + std::to_string(outcomes[i]);
  s += "failures:" + (fails.empty() ? std::string(" none") : fails) + "\n";
  std::snprintf(buf, sizeof buf,
                "messages: %zu, %llu delivered, %llu bounced, %llu warned, "
                "%llu still queued\n",
                messages.size(), static_cast<unsigned long long>(delivered),
                static_cast<unsigned long long>(bounced),
                static_cast<unsigned long long>(warned),
                static_cast<unsigned long long>(pending));
  s += buf;
  s += "wait: median " + fmt_wait(wait_median) + ", p95 " + fmt_wait(wait_p95) +
       ", max " + fmt_wait(wait_max) + "\n";
  if (postmaster_notices)
    s += "postmaster notices: " + std::to_string(postmaster_notices) + "\n";
  for (auto& [peer, d] : last_decisions)
    s += "why " + peer + ": " + d.reason + "\n";
  return s;
}

std::vector<Arrival> synthetic_trace(const SimConfig& cfg, int per_day,
                                     uint64_t seed) {
  std::vector<Arrival> out;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> minute(8 * 60, 18 * 60 - 1);
  std::uniform_int_distribution<uint64_t> size(1024, 64 * 1024);
  std::uniform_int_distribution<int> urgent(0, 19);
  TimeZone utc;
  int64_t days = cfg.duration.count() / 86400;
  for (int64_t d = 0; d < days; ++d) {
    SysTime day = cfg.start + std::chrono::hours(24 * d);
    if (to_local(utc, day).weekday >= 5) continue;
    for (const PeerSchedule& p : cfg.peers)
      for (int i = 0; i < per_day; ++i)
        out.push_back({day + std::chrono::minutes(minute(rng)), p.name,
                       size(rng), urgent(rng) == 0 ? 1 : 0});
  }
  std::stable_sort(
      out.begin(), out.end(),
      [](const Arrival& a, const Arrival& b) { return a.time < b.time; });
  return out;
}

}  // namespace ferry::gw
