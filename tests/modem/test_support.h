// Helpers for the modem tests: a temporary directory, running a coroutine
// to completion on an io_context, and FakeModem, a scripted Hayes modem on
// the master side of a PTY (with an optional PORT.ctl control socket) for
// the sequence tests.  FakeModem is a fixture, not an emulator: it answers
// exactly what its script says, when the driver's bytes match.
#ifndef FERRY_TESTS_MODEM_TEST_SUPPORT_H_
#define FERRY_TESTS_MODEM_TEST_SUPPORT_H_

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace ferry::modem::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ferry-modem-test.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `a` on `io` until it completes (other work, such as a carrier
// watcher, may remain) and returns its value; rethrows its exception.
template <typename T>
T run(boost::asio::io_context& io, boost::asio::awaitable<T> a,
      std::chrono::seconds limit = std::chrono::seconds(60)) {
  std::optional<T> result;
  std::exception_ptr error;
  bool done = false;
  boost::asio::co_spawn(io, std::move(a), [&](std::exception_ptr e, T v) {
    error = e;
    if (!e) result.emplace(std::move(v));
    done = true;
  });
  auto end = std::chrono::steady_clock::now() + limit;
  io.restart();
  while (!done && std::chrono::steady_clock::now() < end)
    io.run_one_for(std::chrono::milliseconds(50));
  if (error) std::rethrow_exception(error);
  if (!done) throw std::runtime_error("coroutine did not finish in time");
  return std::move(*result);
}

class FakeModem {
 public:
  struct Step {
    std::string expect;  // bytes to wait for ("" = none)
    std::string reply;
    int delay_ms = 0;      // after the match, before the reply
    bool hang_up = false;  // after the reply: DCD off (control socket)
  };

  // `with_lines`: also serve PORT.ctl in `dir` like the emulator does.
  FakeModem(const std::string& dir, bool with_lines = false) {
    int slave = -1;
    if (::openpty(&master_, &slave, nullptr, nullptr, nullptr) != 0)
      std::abort();
    termios tio{};
    ::tcgetattr(slave, &tio);
    ::cfmakeraw(&tio);
    ::tcsetattr(slave, TCSANOW, &tio);
    slave_ = slave;  // kept open so the master never sees a hang-up
    path_ = dir + "/modem0";
    std::filesystem::create_symlink(::ttyname(slave), path_);
    if (with_lines) {
      ctl_path_ = path_ + ".ctl";
      listen_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, ctl_path_.c_str(), sizeof addr.sun_path - 1);
      if (::bind(listen_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) ||
          ::listen(listen_, 4))
        std::abort();
    }
  }

  ~FakeModem() {
    stop();
    ::close(master_);
    ::close(slave_);
    if (listen_ >= 0) ::close(listen_);
    if (client_ >= 0) ::close(client_);
  }

  const std::string& path() const { return path_; }

  // Script steps, matched in order.
  FakeModem& on(std::string expect, std::string reply, int delay_ms = 0) {
    steps_.push_back({std::move(expect), std::move(reply), delay_ms});
    return *this;
  }
  FakeModem& send(std::string reply, int delay_ms = 0) {
    steps_.push_back({"", std::move(reply), delay_ms});
    return *this;
  }
  // The call drops: DCD goes low (control socket) after `delay_ms`.
  FakeModem& drop_carrier(std::string reply, int delay_ms = 0) {
    steps_.push_back({"", std::move(reply), delay_ms, true});
    return *this;
  }
  // Echo every byte back (E1).
  FakeModem& echo(bool on) {
    echo_ = on;
    return *this;
  }

  void start() {
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  std::string received() const {
    std::lock_guard<std::mutex> g(mu_);
    return all_;
  }
  std::vector<std::string> control_received() const {
    std::lock_guard<std::mutex> g(mu_);
    return control_;
  }
  bool script_done() const { return next_step_ >= steps_.size(); }
  // Time (since start) at which `needle` was first fully received.
  std::optional<std::chrono::steady_clock::time_point> when_received(
      const std::string& needle) const {
    std::lock_guard<std::mutex> g(mu_);
    auto pos = all_.find(needle);
    if (pos == std::string::npos) return std::nullopt;
    return arrival_[pos + needle.size() - 1];
  }
  std::optional<std::chrono::steady_clock::time_point> byte_time(
      std::size_t i) const {
    std::lock_guard<std::mutex> g(mu_);
    if (i >= arrival_.size()) return std::nullopt;
    return arrival_[i];
  }

  void write(const std::string& bytes) {
    std::size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::write(master_, bytes.data() + off, bytes.size() - off);
      if (n <= 0) return;
      off += static_cast<std::size_t>(n);
    }
  }

 private:
  void set_dcd(bool on) {
    dcd_ = on;
    if (client_ >= 0) {
      std::string line =
          std::string("LINES DCD=") + (on ? "1" : "0") + " DSR=1 CTS=1 RI=0\n";
      (void)!::write(client_, line.data(), line.size());
    }
  }

  void loop() {
    std::string pending;
    while (!stop_) {
      pollfd fds[3] = {
          {master_, POLLIN, 0}, {listen_, POLLIN, 0}, {client_, POLLIN, 0}};
      int n = ::poll(fds, 3, 10);
      if (n < 0) break;
      if (fds[0].revents & POLLIN) {
        char buf[1024];
        ssize_t got = ::read(master_, buf, sizeof buf);
        if (got > 0) {
          auto now = std::chrono::steady_clock::now();
          {
            std::lock_guard<std::mutex> g(mu_);
            all_.append(buf, static_cast<std::size_t>(got));
            arrival_.insert(arrival_.end(), static_cast<std::size_t>(got), now);
          }
          pending.append(buf, static_cast<std::size_t>(got));
          if (echo_ && !online_) write(std::string(buf, got));
        }
      }
      if (listen_ >= 0 && (fds[1].revents & POLLIN)) {
        client_ = ::accept(listen_, nullptr, nullptr);
        set_dcd(dcd_);
      }
      if (client_ >= 0 && (fds[2].revents & POLLIN)) {
        char buf[256];
        ssize_t got = ::read(client_, buf, sizeof buf);
        if (got > 0) {
          std::lock_guard<std::mutex> g(mu_);
          control_buf_.append(buf, static_cast<std::size_t>(got));
          std::size_t nl;
          while ((nl = control_buf_.find('\n')) != std::string::npos) {
            control_.push_back(control_buf_.substr(0, nl));
            control_buf_.erase(0, nl + 1);
            // &D2: DTR low ends the call.
            if (control_.back() == "DTR 0" && dcd_) {
              online_ = false;
              set_dcd(false);
            }
          }
        }
      }
      // Script.
      while (next_step_ < steps_.size()) {
        Step& s = steps_[next_step_];
        if (!s.expect.empty()) {
          auto pos = pending.find(s.expect);
          if (pos == std::string::npos) break;
          pending.erase(0, pos + s.expect.size());
        }
        if (s.delay_ms > 0)
          std::this_thread::sleep_for(std::chrono::milliseconds(s.delay_ms));
        write(s.reply);
        if (s.reply.find("CONNECT") != std::string::npos) {
          online_ = true;
          set_dcd(true);
        }
        if (s.hang_up || s.reply.find("NO CARRIER") != std::string::npos) {
          online_ = false;
          set_dcd(false);
        }
        if (s.reply == "\r\nOK\r\n" && s.expect == "+++") online_ = false;
        ++next_step_;
      }
    }
  }

  int master_ = -1, slave_ = -1, listen_ = -1, client_ = -1;
  std::string path_, ctl_path_;
  std::vector<Step> steps_;
  std::atomic<std::size_t> next_step_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> echo_{false};
  std::atomic<bool> online_{false};
  bool dcd_ = false;
  std::thread thread_;
  mutable std::mutex mu_;
  std::string all_;  // GUARDED_BY(mu_)
  std::vector<std::chrono::steady_clock::time_point> arrival_;
  std::string control_buf_;
  std::vector<std::string> control_;
};

}  // namespace ferry::modem::testing

#endif  // FERRY_TESTS_MODEM_TEST_SUPPORT_H_
