#include "modem/port.h"

#include <fcntl.h>
#include <libserialport.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "modem/error.h"

namespace ferry::modem {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Replaces spaces so a value stays one key=value token.
std::string token(std::string s) {
  for (char& c : s)
    if (c == ' ') c = '_';
  return s;
}

class NoLines final : public ModemLines {
 public:
  std::string_view source() const override { return "none"; }
  bool known() const override { return false; }
  std::optional<LineState> get() override { return std::nullopt; }
  std::error_code set_dtr(bool) override {
    return make_error_code(std::errc::not_supported);
  }
  std::error_code set_rts(bool) override {
    return make_error_code(std::errc::not_supported);
  }
};

class SpLines final : public ModemLines {
 public:
  explicit SpLines(sp_port* port) : port_(port) {}
  std::string_view source() const override { return "libserialport"; }
  bool known() const override { return true; }
  std::optional<LineState> get() override {
    sp_signal bits{};
    if (sp_get_signals(port_, &bits) != SP_OK) return std::nullopt;
    LineState s;
    s.dcd = bits & SP_SIG_DCD;
    s.dsr = bits & SP_SIG_DSR;
    s.cts = bits & SP_SIG_CTS;
    s.ri = bits & SP_SIG_RI;
    return s;
  }
  std::error_code set_dtr(bool on) override {
    if (sp_set_dtr(port_, on ? SP_DTR_ON : SP_DTR_OFF) != SP_OK)
      return {errno ? errno : EIO, std::system_category()};
    return {};
  }
  std::error_code set_rts(bool on) override {
    if (sp_set_rts(port_, on ? SP_RTS_ON : SP_RTS_OFF) != SP_OK)
      return {errno ? errno : EIO, std::system_category()};
    return {};
  }

 private:
  sp_port* port_;
};

class SocketLines final : public ModemLines {
 public:
  explicit SocketLines(int fd) : fd_(fd) {}
  ~SocketLines() override { ::close(fd_); }
  std::string_view source() const override { return "control-socket"; }
  bool known() const override { return true; }

  std::optional<LineState> get() override {
    drain();
    return state_;
  }
  std::error_code set_dtr(bool on) override {
    return send(on ? "DTR 1\n" : "DTR 0\n");
  }
  std::error_code set_rts(bool on) override {
    return send(on ? "RTS 1\n" : "RTS 0\n");
  }

 private:
  std::error_code send(const char* line) {
    std::size_t len = std::strlen(line);
    ssize_t n = ::send(fd_, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n != static_cast<ssize_t>(len))
      return {n < 0 ? errno : EAGAIN, std::system_category()};
    return {};
  }

  // Reads every complete line that has arrived; keeps the last LINES.
  void drain() {
    char buf[512];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      pending_.append(buf, static_cast<std::size_t>(n));
    }
    std::size_t nl;
    while ((nl = pending_.find('\n')) != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      if (line.rfind("LINES", 0) != 0) continue;
      LineState s;
      s.dcd = line.find("DCD=1") != std::string::npos;
      s.dsr = line.find("DSR=1") != std::string::npos;
      s.cts = line.find("CTS=1") != std::string::npos;
      s.ri = line.find("RI=1") != std::string::npos;
      state_ = s;
    }
    if (pending_.size() > 4096) pending_.clear();  // not our protocol
  }

  int fd_;
  std::string pending_;
  std::optional<LineState> state_;
};

speed_t to_speed(unsigned baud) {
  switch (baud) {
    case 300:
      return B300;
    case 1200:
      return B1200;
    case 2400:
      return B2400;
    case 4800:
      return B4800;
    case 9600:
      return B9600;
    case 19200:
      return B19200;
    case 38400:
      return B38400;
    case 57600:
      return B57600;
    case 115200:
      return B115200;
    case 230400:
      return B230400;
    case 460800:
      return B460800;
    default:
      return B0;
  }
}

}  // namespace

void emit_log(const LogFn& log, const std::string& line) {
  if (log) {
    log(line);
  } else {
    std::cerr << line << '\n';
  }
}

std::unique_ptr<ModemLines> connect_control_socket(const std::string& path,
                                                   std::error_code& ec) {
  ec.clear();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    ec = make_error_code(std::errc::filename_too_long);
    return nullptr;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ec = {errno, std::system_category()};
    return nullptr;
  }
  // A local stream socket connects at once or fails; it does not block.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ec = {errno, std::system_category()};
    ::close(fd);
    return nullptr;
  }
  return std::make_unique<SocketLines>(fd);
}

std::error_code SerialPort::open(const boost::asio::any_io_executor& ex,
                                 const std::string& path,
                                 const ModemProfile& profile,
                                 const std::string& name, const LogFn& log,
                                 std::unique_ptr<SerialPort>& out) {
  out.reset();
  std::unique_ptr<SerialPort> port(new SerialPort(ex));
  const std::string prefix = "modem " + name + ": ";

  // libserialport first: it is the one that knows real hardware.
  // libserialport 0.1.1 looks the name up under /sys/class/tty without
  // following symlinks, so /dev/modem or a link elsewhere is resolved
  // first.
  std::string sp_reason;
  std::string device = path;
  if (char* real = ::realpath(path.c_str(), nullptr)) {
    device = real;
    std::free(real);
  }
  sp_port* sp = nullptr;
  if (sp_get_port_by_name(device.c_str(), &sp) != SP_OK) {
    sp_reason = "not-a-serial-device";
    sp = nullptr;
  } else if (sp_open(sp, SP_MODE_READ_WRITE) != SP_OK) {
    sp_reason = token(errno_text(errno));
    sp_free_port(sp);
    sp = nullptr;
  }
  if (sp) {
    bool ok = sp_set_baudrate(sp, static_cast<int>(profile.baud)) == SP_OK &&
              sp_set_bits(sp, 8) == SP_OK &&
              sp_set_parity(sp, SP_PARITY_NONE) == SP_OK &&
              sp_set_stopbits(sp, 1) == SP_OK &&
              sp_set_flowcontrol(sp, profile.rts_cts
                                         ? SP_FLOWCONTROL_RTSCTS
                                         : SP_FLOWCONTROL_NONE) == SP_OK &&
              sp_set_dtr(sp, SP_DTR_ON) == SP_OK;
    int fd = -1;
    if (ok && sp_get_port_handle(sp, &fd) == SP_OK) fd = ::dup(fd);
    // libserialport leaves VMIN=0: a read with nothing pending returns 0,
    // which Asio would take for end of file.  With VMIN=1 and O_NONBLOCK
    // an empty port gives EAGAIN, as Asio expects.
    termios tio{};
    if (fd >= 0 && ::tcgetattr(fd, &tio) == 0) {
      tio.c_cc[VMIN] = 1;
      tio.c_cc[VTIME] = 0;
      ok = ok && ::tcsetattr(fd, TCSANOW, &tio) == 0;
    }
    if (!ok || fd < 0) {
      int err = errno;
      sp_close(sp);
      sp_free_port(sp);
      emit_log(log, prefix + "event=open port=" + path +
                        " result=failed transport=libserialport error=" +
                        token(errno_text(err)));
      return make_error_code(ModemErrc::port_unavailable);
    }
    boost::system::error_code bec;
    port->descriptor_.assign(fd, bec);
    if (!bec) port->descriptor_.non_blocking(true, bec);
    if (bec) {
      ::close(fd);
      sp_close(sp);
      sp_free_port(sp);
      return make_error_code(ModemErrc::port_unavailable);
    }
    port->sp_ = sp;
    port->lines_ = std::make_unique<SpLines>(sp);
    port->transport_ = "libserialport";
    emit_log(log, prefix + "event=open port=" + path +
                      " transport=libserialport lines=libserialport device=" +
                      device + " baud=" + std::to_string(profile.baud));
    out = std::move(port);
    return {};
  }

  // termios: PTYs and whatever else libserialport would not take.
  int fd = ::open(path.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    emit_log(log, prefix + "event=open port=" + path +
                      " result=failed transport=termios error=" +
                      token(errno_text(errno)));
    return make_error_code(ModemErrc::port_unavailable);
  }
  termios tio{};
  if (!::isatty(fd) || ::tcgetattr(fd, &tio) != 0) {
    int err = errno;
    ::close(fd);
    emit_log(log, prefix + "event=open port=" + path +
                      " result=failed transport=termios error=" +
                      token(errno_text(err)));
    return make_error_code(ModemErrc::port_unavailable);
  }
  ::cfmakeraw(&tio);
  tio.c_cflag &= ~static_cast<tcflag_t>(CSTOPB | PARENB | CSIZE | HUPCL);
  tio.c_cflag |= CS8 | CLOCAL | CREAD;
  if (profile.rts_cts) {
    tio.c_cflag |= CRTSCTS;
  } else {
    tio.c_cflag &= ~static_cast<tcflag_t>(CRTSCTS);
  }
  tio.c_cc[VMIN] = 1;
  tio.c_cc[VTIME] = 0;
  speed_t speed = to_speed(profile.baud);
  if (speed == B0) speed = B115200;
  ::cfsetispeed(&tio, speed);
  ::cfsetospeed(&tio, speed);
  if (::tcsetattr(fd, TCSANOW, &tio) != 0) {
    int err = errno;
    ::close(fd);
    emit_log(log, prefix + "event=open port=" + path +
                      " result=failed transport=termios error=" +
                      token(errno_text(err)));
    return make_error_code(ModemErrc::port_unavailable);
  }
  boost::system::error_code bec;
  port->descriptor_.assign(fd, bec);
  if (bec) {
    ::close(fd);
    return make_error_code(ModemErrc::port_unavailable);
  }
  port->transport_ = "termios";

  // Control lines: the emulator's socket next to the port, if any.
  std::string lines_note;
  const std::string ctl = path + ".ctl";
  struct stat st {};
  if (::stat(ctl.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    std::error_code ec;
    port->lines_ = connect_control_socket(ctl, ec);
    if (!port->lines_)
      lines_note = " control_socket=" + ctl + " error=" + token(ec.message());
  }
  if (!port->lines_) port->lines_ = std::make_unique<NoLines>();
  if (port->lines_->known()) {
    emit_log(log, prefix + "event=open port=" + path +
                      " transport=termios lines=control-socket socket=" + ctl +
                      " libserialport=" + sp_reason);
  } else {
    emit_log(log,
             prefix + "event=open port=" + path +
                 " transport=termios lines=unknown libserialport=" + sp_reason +
                 lines_note + " note=relying_on_result_codes_and_timeouts");
  }
  out = std::move(port);
  return {};
}

SerialPort::~SerialPort() { close(); }

void SerialPort::flush_input() {
  if (descriptor_.is_open()) ::tcflush(descriptor_.native_handle(), TCIFLUSH);
}

void SerialPort::close() {
  boost::system::error_code ignored;
  if (descriptor_.is_open()) descriptor_.close(ignored);
  lines_.reset();
  if (sp_) {
    sp_close(sp_);
    sp_free_port(sp_);
    sp_ = nullptr;
  }
}

}  // namespace ferry::modem
