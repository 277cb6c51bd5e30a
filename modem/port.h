// Serial port for a modem: the byte stream plus the modem-control lines.
//
// SerialPort::open() tries libserialport first (real ttyS/ttyUSB/ttyACM
// ports and symlinks to them: speed, 8N1, RTS/CTS, DTR, and DCD/DSR/CTS/RI
// through sp_get_signals).  libserialport 0.1.1 refuses pseudo-terminals
// (no /sys/class/tty entry, TIOCMGET fails), so for what it refuses the port
// is opened with open(2) + termios, and the control lines come from the
// emulator's control socket `PORT.ctl` when one exists (HAYES §17 Layer 1),
// otherwise they are unknown and the driver relies on result codes and
// timeouts (it logs which).
//
// Either way the bytes go through an Asio stream_descriptor on a
// non-blocking file descriptor, so nothing here blocks the io_context.
//
// Concurrency: a SerialPort and its ModemLines belong to the strand (or
// single-threaded io_context) of the executor it was opened with.
#ifndef FERRY_MODEM_PORT_H_
#define FERRY_MODEM_PORT_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "modem/profile.h"

struct sp_port;  // libserialport's handle; its header stays out of ours

namespace ferry::modem {

// Receives one finished log line (without newline).  Empty = stderr.
using LogFn = std::function<void(std::string_view line)>;

// Sends `line` to `log`, or to stderr with a newline when log is empty.
void emit_log(const LogFn& log, const std::string& line);

struct LineState {
  bool dcd = false;
  bool dsr = false;
  bool cts = false;
  bool ri = false;
};

// Where DCD/DSR/CTS/RI come from and where DTR/RTS go.
class ModemLines {
 public:
  virtual ~ModemLines() = default;
  // "libserialport", "control-socket" or "none".
  virtual std::string_view source() const = 0;
  // False when the port has no control lines we can see (plain PTY).
  virtual bool known() const = 0;
  // The current lines; nullopt when unknown or not yet reported.
  virtual std::optional<LineState> get() = 0;
  // errc::not_supported when the lines are unknown.
  virtual std::error_code set_dtr(bool on) = 0;
  virtual std::error_code set_rts(bool on) = 0;
};

// Control lines over the emulator's per-port socket: the emulator sends
// "LINES DCD=1 DSR=1 CTS=1 RI=0" on connect and on every change; we send
// "DTR 0" / "RTS 1".  Non-blocking; get() drains what has arrived.
std::unique_ptr<ModemLines> connect_control_socket(const std::string& path,
                                                   std::error_code& ec);

class SerialPort {
 public:
  using Descriptor = boost::asio::posix::stream_descriptor;

  // Opens and configures `path`.  Returns ModemErrc::port_unavailable
  // (and logs the system error) when neither libserialport nor termios can
  // open and configure it.  `name` prefixes the log lines.
  static std::error_code open(const boost::asio::any_io_executor& ex,
                              const std::string& path,
                              const ModemProfile& profile,
                              const std::string& name, const LogFn& log,
                              std::unique_ptr<SerialPort>& out);

  ~SerialPort();
  SerialPort(const SerialPort&) = delete;
  SerialPort& operator=(const SerialPort&) = delete;

  Descriptor& descriptor() { return descriptor_; }
  ModemLines& lines() { return *lines_; }
  // "libserialport" or "termios".
  std::string_view transport() const { return transport_; }

  // Discards bytes the modem sent that nobody has read (tcflush).
  void flush_input();
  void close();

 private:
  SerialPort(const boost::asio::any_io_executor& ex) : descriptor_(ex) {}

  Descriptor descriptor_;
  std::unique_ptr<ModemLines> lines_;
  std::string transport_;
  ::sp_port* sp_ = nullptr;
};

}  // namespace ferry::modem

#endif  // FERRY_MODEM_PORT_H_
