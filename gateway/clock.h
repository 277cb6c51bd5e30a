// The one place ferryd reads the time.
//
// The scheduler, its timers (backoff, delay warnings, lifetimes) and the
// simulator ask a Clock for "now" instead of the system, so a test can
// set the time, jump a weekend ahead, or run a scaled clock that moves N
// times faster than the wall clock together with the modem emulator's
// time scale.  Times are system_clock time points (UTC), the same type the
// spool stores.
//
// Concurrency: every Clock here may be read from any thread.  ManualClock
// may also be set from any thread (a mutex guards it).
#pragma once

#include <chrono>
#include <mutex>

namespace ferry::gw {

using SysClock = std::chrono::system_clock;
using SysTime = SysClock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SysTime now() const = 0;
};

// The real time of the machine.
class SystemClock final : public Clock {
 public:
  SysTime now() const override { return SysClock::now(); }
  // A process-wide instance; lives for the whole program.
  static const SystemClock& instance() {
    static const SystemClock clock;
    return clock;
  }
};

// Time that moves only when told to: tests and the simulator.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(SysTime start) : now_(start) {}
  SysTime now() const override {
    std::lock_guard lock(mu_);
    return now_;
  }
  void set(SysTime t) {
    std::lock_guard lock(mu_);
    now_ = t;
  }
  void advance(SysClock::duration d) {
    std::lock_guard lock(mu_);
    now_ += d;
  }

 private:
  mutable std::mutex mu_;
  SysTime now_;  // REQUIRES: mu_
};

// Wall-clock time sped up `scale` times from `start`: an end-to-end test
// runs ferryd with the same scale as ferry-modemsim so that a configured
// 30-minute backoff passes in a few seconds.  scale must be > 0.
class ScaledClock final : public Clock {
 public:
  ScaledClock(SysTime start, double scale)
      : start_(start),
        origin_(std::chrono::steady_clock::now()),
        scale_(scale) {}
  SysTime now() const override {
    std::chrono::duration<double> real =
        std::chrono::steady_clock::now() - origin_;
    auto scaled = std::chrono::duration_cast<SysClock::duration>(
        std::chrono::duration<double>(real.count() * scale_));
    return start_ + scaled;
  }

 private:
  SysTime start_;
  std::chrono::steady_clock::time_point origin_;
  double scale_;
};

}  // namespace ferry::gw
