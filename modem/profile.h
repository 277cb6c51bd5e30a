// Modem profile: everything about one modem that a postmaster may tune.
//
// A plain struct with defaults that suit a plain Hayes-compatible modem; the
// configuration reader maps ferry.conf keys onto its fields.  Every timeout
// is a duration in "modem time"; scaled() multiplies it by time_scale so a
// test can run the driver against an emulator that runs faster (the
// emulator's --time-scale F pairs with time_scale = 1/F).
#ifndef FERRY_MODEM_PROFILE_H_
#define FERRY_MODEM_PROFILE_H_

#include <chrono>
#include <string>
#include <vector>

namespace ferry::modem {

enum class HangupMethod {
  automatic,  // DTR drop where the port has the line, else escape + ATH
  dtr,        // DTR drop (falls back to escape + ATH if the line is unknown)
  escape,     // guard time, +++, guard time, ATH
};

enum class AnswerMethod {
  host,   // S0=0: count RINGs ourselves and send ATA (mgetty's way)
  modem,  // S0=n: the modem answers on the n-th ring by itself
};

enum class DialMode { tone, pulse };

struct ModemProfile {
  using ms = std::chrono::milliseconds;

  // Name used in log lines ("modem NAME: ..."); empty = port base name.
  std::string name;

  // Port settings (8N1 always).
  unsigned baud = 115200;
  bool rts_cts = true;

  // Reset and init.  ATZ, a pause (the OK may still be followed by the
  // stored profile settling), then each init command; a command in
  // optional_init that answers ERROR is logged and skipped.
  std::string reset_command = "ATZ";
  std::string init_string = "ATE0 Q0 V1 X4 &C1 &D2 S0=0";
  std::vector<std::string> optional_init;

  // Dialling: ATD + mode + prefix + number.  The prefix may contain
  // modifiers, e.g. "9W" or "0," for an outside line.
  DialMode dial_mode = DialMode::tone;
  std::string dial_prefix;

  HangupMethod hangup = HangupMethod::automatic;

  AnswerMethod answer = AnswerMethod::host;
  unsigned answer_rings = 1;  // RINGs before ATA, or S0 for AnswerMethod::modem

  // Timeouts and guard times (HAYES.md §13.4, §7).
  ms reset_pause{600};       // after the OK of ATZ
  ms command_timeout{2000};  // any plain command
  ms reset_timeout{5000};    // ATZ (the modem may be slow to reset)
  ms dial_timeout{90000};    // ATD until CONNECT or a failure (S7 + margin)
  ms answer_timeout{80000};  // ATA until CONNECT
  ms hangup_timeout{20000};  // ATH until OK
  ms guard_time{1100};       // S12 (1 s) + 100 ms, before and after +++
  ms dtr_drop{1000};         // DTR held low to hang up
  ms ring_gap{10000};        // no RING this long: the caller gave up
  ms line_poll{100};         // how often DCD is looked at in data mode
  ms lock_wait{0};           // wait this long for a busy lock; 0 = fail

  double time_scale = 1.0;

  ms scaled(ms d) const {
    return ms(static_cast<ms::rep>(static_cast<double>(d.count()) * time_scale +
                                   0.5));
  }
};

}  // namespace ferry::modem

#endif  // FERRY_MODEM_PROFILE_H_
