// Failures of the modem driver, classified for the call scheduler.
//
// Every operation of the modem layer reports failure as a std::error_code in
// modem_category(): the scheduler reads the enum to decide what a failed
// call means (BUSY retries soon, NO DIALTONE means the local line is down,
// a locked port means someone else is using it) and the message is what a
// postmaster reads in the log.  Errors of the operating system (open(2),
// link(2) ...) keep their std::system_category() code; the log line names
// the object they concern.
#ifndef FERRY_MODEM_ERROR_H_
#define FERRY_MODEM_ERROR_H_

#include <system_error>

namespace ferry::modem {

enum class ModemErrc {
  // Outcomes of a call attempt reported by the modem.
  busy = 1,     // BUSY: the far line is engaged.
  no_answer,    // NO ANSWER, or nobody answered before the dial timeout.
  no_dialtone,  // NO DIALTONE / NO DIAL TONE: our own line is down.
  no_carrier,   // NO CARRIER while dialling or answering.
  blacklisted,  // BLACKLISTED: the modem refuses to dial this number.
  delayed,      // DELAYED: the modem imposes a wait before a redial.
  voice,        // VOICE: a person or a fax answered.
  call_failed,  // Another "NO ..." or unknown final result for a call.
  modem_error,  // ERROR: the modem rejected a command.

  // The modem or the port itself.
  not_responding,    // No final result within the command timeout.
  port_unavailable,  // The port cannot be opened or configured.
  port_locked,       // A live process holds the UUCP lock of the port.
  port_io,           // Reading or writing the port failed.

  // Data mode.
  carrier_lost,   // Carrier dropped (DCD, NO CARRIER, port hang-up).
  not_connected,  // Stream used while no call is up.
  hangup_failed,  // The modem would not go on-hook.

  // Answering.
  no_call,         // No RING arrived before the wait ended.
  call_abandoned,  // The caller stopped ringing before we answered.
};

const std::error_category& modem_category() noexcept;

inline std::error_code make_error_code(ModemErrc e) noexcept {
  return {static_cast<int>(e), modem_category()};
}

// True for failures that say nothing about the far end and are worth an
// early retry (busy, no answer, a transient NO CARRIER); false for those
// that need a person (no dial tone, blacklisted, port problems).
bool retry_soon(std::error_code ec) noexcept;

}  // namespace ferry::modem

template <>
struct std::is_error_code_enum<ferry::modem::ModemErrc> : std::true_type {};

#endif  // FERRY_MODEM_ERROR_H_
