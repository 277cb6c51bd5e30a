#include "modem/error.h"

#include <string>

namespace ferry::modem {
namespace {

class ModemCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ferry.modem"; }

  std::string message(int ev) const override {
    switch (static_cast<ModemErrc>(ev)) {
      case ModemErrc::busy:
        return "line busy";
      case ModemErrc::no_answer:
        return "no answer";
      case ModemErrc::no_dialtone:
        return "no dial tone";
      case ModemErrc::no_carrier:
        return "no carrier";
      case ModemErrc::blacklisted:
        return "number blacklisted by the modem";
      case ModemErrc::delayed:
        return "dialling delayed by the modem";
      case ModemErrc::voice:
        return "voice answered";
      case ModemErrc::call_failed:
        return "call failed";
      case ModemErrc::modem_error:
        return "modem answered ERROR";
      case ModemErrc::not_responding:
        return "modem not responding";
      case ModemErrc::port_unavailable:
        return "port unavailable";
      case ModemErrc::port_locked:
        return "port locked by another process";
      case ModemErrc::port_io:
        return "port input/output error";
      case ModemErrc::carrier_lost:
        return "carrier lost";
      case ModemErrc::not_connected:
        return "no call in progress";
      case ModemErrc::hangup_failed:
        return "modem did not hang up";
      case ModemErrc::no_call:
        return "no incoming call";
      case ModemErrc::call_abandoned:
        return "caller stopped ringing";
    }
    return "unknown modem error " + std::to_string(ev);
  }
};

}  // namespace

const std::error_category& modem_category() noexcept {
  static const ModemCategory category;
  return category;
}

bool retry_soon(std::error_code ec) noexcept {
  if (ec.category() != modem_category()) return false;
  switch (static_cast<ModemErrc>(ec.value())) {
    case ModemErrc::busy:
    case ModemErrc::no_answer:
    case ModemErrc::no_carrier:
    case ModemErrc::carrier_lost:
    case ModemErrc::call_failed:
    case ModemErrc::port_locked:
      return true;
    default:
      return false;
  }
}

}  // namespace ferry::modem
