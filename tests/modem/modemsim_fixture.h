// Fixture for the end-to-end modem tests: starts ferry-modemsim with two
// modems ("a" number 100, "b" number 200) in a fresh temporary directory,
// waits for its "ready", talks to its admin socket, and stops it with
// SIGTERM.  Tests skip when the emulator binary is not built.
#ifndef FERRY_TESTS_MODEM_MODEMSIM_FIXTURE_H_
#define FERRY_TESTS_MODEM_MODEMSIM_FIXTURE_H_

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "modem/modem.h"
#include "tests/modem/test_support.h"

namespace ferry::modem::testing {

namespace asio = boost::asio;
inline constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

inline std::string modemsim_binary() {
  if (const char* env = std::getenv("FERRY_MODEMSIM")) return env;
  return std::string(FERRY_BUILD_DIR) + "/ferry-modemsim";
}

class ModemSimTest : public ::testing::Test {
 protected:
  // The emulator runs this many times faster than real time.
  static constexpr double kSpeedUp = 5.0;

  void SetUp() override {
    if (!std::filesystem::exists(modemsim_binary()))
      GTEST_SKIP() << "ferry-modemsim not built: " << modemsim_binary();
    lock_dir_ = tmp_.path() + "/lock";
    std::filesystem::create_directory(lock_dir_);
    admin_ = tmp_.path() + "/admin";
    profile_.time_scale = 1.0 / kSpeedUp;
    start_emulator();
  }

  void TearDown() override {
    a_.reset();
    b_.reset();
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  void start_emulator() {
    int out[2];
    ASSERT_EQ(::pipe(out), 0);
    std::string speed = std::to_string(kSpeedUp);
    std::string err_path = tmp_.path() + "/modemsim.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      // The emulator must not outlive a test binary that crashes.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      ::dup2(out[1], 1);
      int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0) ::dup2(err, 2);
      ::close(out[0]);
      std::string bin = modemsim_binary();
      ::execl(bin.c_str(), bin.c_str(), "--dir", tmp_.path().c_str(), "--modem",
              "a:100", "--modem", "b:200", "--time-scale", speed.c_str(),
              "--control", admin_.c_str(), "--train-ms", "1000",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    // Wait for "ready" (bounded: the emulator creates two PTYs).
    std::string got;
    pollfd p{out[0], POLLIN, 0};
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (got.find("ready") == std::string::npos &&
           std::chrono::steady_clock::now() < end) {
      if (::poll(&p, 1, 200) > 0) {
        char buf[256];
        ssize_t n = ::read(out[0], buf, sizeof buf);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
      }
    }
    ::close(out[0]);
    ASSERT_NE(got.find("ready"), std::string::npos)
        << "emulator did not start: " << emulator_log();
  }

  std::string emulator_log() {
    std::ifstream in(tmp_.path() + "/modemsim.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // One admin command; returns the reply line.
  std::string admin(const std::string& line) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, admin_.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return "error connect";
    }
    std::string msg = line + "\n";
    (void)!::write(fd, msg.data(), msg.size());
    std::string reply;
    char c;
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, 5000) > 0 && ::read(fd, &c, 1) == 1 && c != '\n')
      reply += c;
    ::close(fd);
    return reply;
  }

  std::string port(const char* name) { return tmp_.path() + "/" + name; }

  LogFn logger() {
    return [this](std::string_view line) {
      std::lock_guard<std::mutex> g(log_mu_);
      log_.emplace_back(line);
    };
  }
  bool logged(const std::string& needle) {
    std::lock_guard<std::mutex> g(log_mu_);
    for (const auto& l : log_)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::string log_text() {
    std::lock_guard<std::mutex> g(log_mu_);
    std::string s;
    for (const auto& l : log_) s += l + "\n";
    return s + "--- emulator ---\n" + emulator_log();
  }

  // Opens a driver on emulator port `name`.
  std::unique_ptr<Modem> open(const char* name) {
    ModemProfile p = profile_;
    p.name = name;
    auto o = run(io_, Modem::open(io_.get_executor(), port(name), p, lock_dir_,
                                  logger()));
    EXPECT_FALSE(o.ec) << o.ec.message() << "\n" << log_text();
    return std::move(o.modem);
  }

  // Runs two coroutines side by side until both finish.
  template <typename A, typename B>
  std::pair<A, B> run_both(asio::awaitable<A> a, asio::awaitable<B> b) {
    std::optional<A> ra;
    std::optional<B> rb;
    std::exception_ptr ea, eb;
    asio::co_spawn(io_, std::move(a), [&](std::exception_ptr e, A v) {
      ea = e;
      if (!e) ra.emplace(std::move(v));
    });
    asio::co_spawn(io_, std::move(b), [&](std::exception_ptr e, B v) {
      eb = e;
      if (!e) rb.emplace(std::move(v));
    });
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    io_.restart();
    while ((!(ra || ea) || !(rb || eb)) &&
           std::chrono::steady_clock::now() < end)
      io_.run_one_for(std::chrono::milliseconds(50));
    if (ea) std::rethrow_exception(ea);
    if (eb) std::rethrow_exception(eb);
    if (!ra || !rb) throw std::runtime_error("run_both timed out");
    return {std::move(*ra), std::move(*rb)};
  }

  // Dials b from a and answers on b; both end up online.
  void connect_a_to_b() {
    a_ = open("a");
    b_ = open("b");
    ASSERT_TRUE(a_ && b_);
    auto [ra, rb] =
        run_both(a_->dial("200"), b_->wait_for_call(std::chrono::seconds(60)));
    ASSERT_TRUE(ra) << ra.ec.message() << "\n" << log_text();
    ASSERT_TRUE(rb) << rb.ec.message() << "\n" << log_text();
    EXPECT_GT(ra.connect.speed, 0u);
  }

  asio::awaitable<std::error_code> send(Modem& m, std::string bytes) {
    auto [ec, n] =
        co_await asio::async_write(m.stream(), asio::buffer(bytes), kTuple);
    (void)n;
    co_return std::error_code(ec);
  }

  // Reads exactly `count` bytes, or until an error.
  struct Received {
    std::string bytes;
    std::error_code ec;
  };
  asio::awaitable<Received> receive(Modem& m, std::size_t count) {
    Received r;
    r.bytes.resize(count);
    auto [ec, n] =
        co_await asio::async_read(m.stream(), asio::buffer(r.bytes), kTuple);
    r.bytes.resize(n);
    r.ec = ec;
    co_return r;
  }
  // Reads until the stream fails; returns the error and what came before.
  asio::awaitable<Received> receive_until_error(Modem& m) {
    Received r;
    for (;;) {
      char buf[256];
      auto [ec, n] =
          co_await m.stream().async_read_some(asio::buffer(buf), kTuple);
      r.bytes.append(buf, n);
      if (ec) {
        r.ec = ec;
        co_return r;
      }
    }
  }

  TempDir tmp_;
  std::string lock_dir_, admin_;
  ModemProfile profile_;
  pid_t pid_ = -1;
  asio::io_context io_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::unique_ptr<Modem> a_, b_;  // last: their close() still logs
};

}  // namespace ferry::modem::testing

#endif  // FERRY_TESTS_MODEM_MODEMSIM_FIXTURE_H_
