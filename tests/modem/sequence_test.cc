// The driver's sequences (reset/init, dial, answer, data, escape, hang-up,
// carrier loss) against scripted transcripts of real modem behaviour played
// by FakeModem on a PTY (HAYES.md §13).  The PTY path is the termios
// transport; with a PORT.ctl socket the control lines are known.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "modem/modem.h"
#include "tests/modem/test_support.h"

namespace ferry::modem {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using testing::FakeModem;
using testing::TempDir;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

const char kOk[] = "\r\nOK\r\n";

class SequenceTest : public ::testing::Test {
 protected:
  SequenceTest() {
    profile_.name = "fake";
    profile_.time_scale = 0.25;  // command timeout 500 ms, guard 275 ms
    lock_dir_ = tmp_.path() + "/lock";
    std::filesystem::create_directory(lock_dir_);
  }

  // The usual reset + init exchange.
  void script_init(FakeModem& m) {
    m.on("ATZ\r", kOk).on("ATE0 Q0 V1 X4 &C1 &D2 S0=0\r", kOk);
  }

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
    return s;
  }

  asio::awaitable<Modem::OpenResult> open(const std::string& path) {
    co_return co_await Modem::open(io_.get_executor(), path, profile_,
                                   lock_dir_, logger());
  }

  // Opens, dials `number`, returns the result (modem kept in modem_).
  CallResult open_and_dial(FakeModem& fake, const std::string& number) {
    fake.start();
    auto o = testing::run(io_, open(fake.path()));
    EXPECT_FALSE(o.ec) << o.ec.message() << "\n" << log_text();
    if (o.ec) return CallResult{o.ec, {}, {}};
    modem_ = std::move(o.modem);
    return testing::run(io_, modem_->dial(number));
  }

  TempDir tmp_;
  std::string lock_dir_;
  ModemProfile profile_;
  asio::io_context io_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::unique_ptr<Modem> modem_;  // last: its close() still logs
};

// ---- §13.1 reset and init ----

TEST_F(SequenceTest, InitSendsResetThenInitString) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec) << log_text();
  EXPECT_EQ(fake.received(), "ATZ\rATE0 Q0 V1 X4 &C1 &D2 S0=0\r");
  EXPECT_TRUE(logged("modem fake: event=open port=" + fake.path() +
                     " transport=termios lines=unknown"));
  EXPECT_TRUE(logged("modem fake: event=ready transport=termios lines=none"));
  EXPECT_TRUE(std::filesystem::exists(lock_dir_ + "/LCK..modem0"));
  o.modem.reset();
  EXPECT_FALSE(std::filesystem::exists(lock_dir_ + "/LCK..modem0"));
}

TEST_F(SequenceTest, PauseAfterResetBeforeInit) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  auto z = fake.when_received("ATZ\r");
  auto init = fake.byte_time(4);
  ASSERT_TRUE(z && init);
  EXPECT_GE(*init - *z,
            profile_.scaled(profile_.reset_pause) - milliseconds(20));
}

TEST_F(SequenceTest, ResetAnsweredInStoredNumericFormIsAccepted) {
  FakeModem fake(tmp_.path());
  fake.on("ATZ\r", "0\r").on("S0=0\r", kOk);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  EXPECT_FALSE(o.ec) << log_text();
}

TEST_F(SequenceTest, OptionalInitRefusedWithErrorIsSkipped) {
  profile_.optional_init = {"AT&K3", "AT+FCLASS=0"};
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("AT&K3\r", "\r\nERROR\r\n").on("AT+FCLASS=0\r", kOk);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  EXPECT_FALSE(o.ec) << log_text();
  EXPECT_TRUE(logged("event=init command=AT&K3 result=ERROR action=ignored"));
}

TEST_F(SequenceTest, InitStringRefusedIsModemError) {
  FakeModem fake(tmp_.path());
  fake.on("ATZ\r", kOk).on("S0=0\r", "\r\nERROR\r\n");
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  EXPECT_EQ(o.ec, ModemErrc::modem_error);
  EXPECT_FALSE(std::filesystem::exists(lock_dir_ + "/LCK..modem0"));
}

TEST_F(SequenceTest, SilentModemIsNotResponding) {
  FakeModem fake(tmp_.path());
  fake.start();
  auto t0 = std::chrono::steady_clock::now();
  auto o = testing::run(io_, open(fake.path()));
  EXPECT_EQ(o.ec, ModemErrc::not_responding);
  EXPECT_TRUE(
      logged("event=reset command=ATZ result=timeout "
             "error=modem_not_responding"));
  // ATZ, escape, ATZ again: bounded by the scaled timeouts.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(fake.received(), "ATZ\r+++ATZ\r");
}

TEST_F(SequenceTest, EchoOnIsIgnored) {
  FakeModem fake(tmp_.path());
  fake.echo(true);
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600\r\n");
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r) << log_text();
  EXPECT_EQ(r.connect.speed, 33600u);
}

// ---- §13.3 RING during a command ----

TEST_F(SequenceTest, RingBetweenCommandAndOkIsNotTheAnswer) {
  FakeModem fake(tmp_.path());
  fake.on("ATZ\r", kOk).on("S0=0\r", "\r\nRING\r\n").send(kOk, 50);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec) << log_text();
  EXPECT_TRUE(logged("event=ring count=1"));
}

TEST_F(SequenceTest, RingDuringInitCountsTowardsAnswer) {
  FakeModem fake(tmp_.path());
  fake.on("ATZ\r", kOk).on("S0=0\r", "\r\nRING\r\n\r\nOK\r\n");
  fake.on("ATA\r", "\r\nCONNECT 33600/ARQ\r\n", 100);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  modem_ = std::move(o.modem);
  CallResult r = testing::run(io_, modem_->wait_for_call(milliseconds(2000)));
  ASSERT_TRUE(r) << r.ec.message() << "\n" << log_text();
  EXPECT_TRUE(r.connect.error_control);
}

// ---- dial results, each a transcript ----

struct DialCase {
  const char* name;
  std::string reply;
  ModemErrc want;
};
void PrintTo(const DialCase& c, std::ostream* os) { *os << c.name; }

class DialFailureTest : public SequenceTest,
                        public ::testing::WithParamInterface<DialCase> {};

TEST_P(DialFailureTest, ClassifiedForTheScheduler) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r", GetParam().reply, 50);
  CallResult r = open_and_dial(fake, "5551234");
  EXPECT_EQ(r.ec, GetParam().want) << r.ec.message();
  EXPECT_FALSE(modem_->online());
  EXPECT_TRUE(logged("modem fake: event=dial number=5551234 result="))
      << log_text();
}

INSTANTIATE_TEST_SUITE_P(
    Results, DialFailureTest,
    ::testing::Values(
        DialCase{"busy", "\r\nBUSY\r\n", ModemErrc::busy},
        DialCase{"no_answer", "\r\nNO ANSWER\r\n", ModemErrc::no_answer},
        DialCase{"no_dialtone", "\r\nNO DIALTONE\r\n", ModemErrc::no_dialtone},
        DialCase{"no_dial_tone_usr", "\r\nNO DIAL TONE\r\n",
                 ModemErrc::no_dialtone},
        DialCase{"no_carrier", "\r\nNO CARRIER\r\n", ModemErrc::no_carrier},
        DialCase{"blacklisted", "\r\nBLACKLISTED\r\n", ModemErrc::blacklisted},
        DialCase{"delayed", "\r\nDELAYED\r\n", ModemErrc::delayed},
        DialCase{"voice", "\r\nVOICE\r\n", ModemErrc::voice},
        DialCase{"error", "\r\nERROR\r\n", ModemErrc::modem_error},
        DialCase{"no_line", "\r\nNO LINE\r\n", ModemErrc::call_failed},
        DialCase{"ringing_then_busy", "\r\nRINGING\r\n\r\nBUSY\r\n",
                 ModemErrc::busy},
        DialCase{"numeric_busy", "7\r", ModemErrc::busy},
        DialCase{"numeric_no_carrier", "3\r", ModemErrc::no_carrier}),
    [](const auto& p) { return std::string(p.param.name); });

TEST_F(SequenceTest, BusyLogLine) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nBUSY\r\n");
  open_and_dial(fake, "5551234");
  EXPECT_TRUE(
      logged("modem fake: event=dial number=5551234 result=BUSY "
             "error=line_busy"))
      << log_text();
}

TEST_F(SequenceTest, DialPrefixAndPulseMode) {
  profile_.dial_prefix = "9W";
  profile_.dial_mode = DialMode::pulse;
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDP9W0123\r", "\r\nBUSY\r\n");
  CallResult r = open_and_dial(fake, "0123");
  EXPECT_EQ(r.ec, ModemErrc::busy);
}

TEST_F(SequenceTest, NumberWithCommandCharactersIsRefused) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  CallResult r = open_and_dial(fake, "555\rATH");
  EXPECT_EQ(r.ec, std::errc::invalid_argument);
  EXPECT_EQ(fake.received().find("ATD"), std::string::npos);
}

TEST_F(SequenceTest, DialTimeoutAbortsWithOneCharacter) {
  profile_.dial_timeout = milliseconds(2000);  // 500 ms scaled
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r", "").on("\r", "\r\nNO CARRIER\r\n");
  CallResult r = open_and_dial(fake, "5551234");
  EXPECT_EQ(r.ec, ModemErrc::no_answer);
  EXPECT_TRUE(fake.received().ends_with("ATDT5551234\r\r"));
}

TEST_F(SequenceTest, DialIntoModemThatDiesIsNotResponding) {
  profile_.dial_timeout = milliseconds(2000);
  FakeModem fake(tmp_.path());
  script_init(fake);
  CallResult r = open_and_dial(fake, "5551234");
  EXPECT_EQ(r.ec, ModemErrc::not_responding);
}

// ---- CONNECT, data, hang-up ----

TEST_F(SequenceTest, ConnectWithProgressLinesFillsConnectInfo) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r",
          "\r\nCARRIER 31200\r\n\r\nPROTOCOL: LAP-M\r\n"
          "\r\nCOMPRESSION: V.42BIS\r\n\r\nCONNECT 115200\r\n");
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r) << log_text();
  EXPECT_EQ(r.connect.speed, 115200u);
  EXPECT_EQ(r.connect.carrier_speed, 31200u);
  EXPECT_EQ(r.connect.protocol, "LAPM");
  EXPECT_EQ(r.connect.compression, "V.42BIS");
  EXPECT_TRUE(
      logged("event=dial number=5551234 result=CONNECT speed=115200 "
             "carrier=31200 protocol=LAPM"));
}

TEST_F(SequenceTest, BytesArrivingWithConnectReachTheStream) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600/ARQ/V34/LAPM/V42BIS\r\n220 hi");
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r);
  EXPECT_EQ(r.connect.modulation, "V34");
  auto read = [&]() -> asio::awaitable<std::string> {
    std::string got(6, '\0');
    auto [ec, n] =
        co_await asio::async_read(modem_->stream(), asio::buffer(got), kTuple);
    EXPECT_FALSE(ec) << ec.message();
    got.resize(n);
    co_return got;
  };
  EXPECT_EQ(testing::run(io_, read()), "220 hi");
}

TEST_F(SequenceTest, DataBothWaysThenEscapeHangup) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600\r\n");
  fake.on("hello\n", "world\n");
  fake.on("+++", kOk).on("ATH\r", kOk);
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r);
  auto talk = [&]() -> asio::awaitable<std::string> {
    auto [wec, wn] = co_await asio::async_write(
        modem_->stream(), asio::buffer(std::string("hello\n")), kTuple);
    EXPECT_FALSE(wec);
    std::string got(6, '\0');
    auto [ec, n] =
        co_await asio::async_read(modem_->stream(), asio::buffer(got), kTuple);
    EXPECT_FALSE(ec) << ec.message();
    co_return got.substr(0, n);
  };
  EXPECT_EQ(testing::run(io_, talk()), "world\n");
  std::error_code ec = testing::run(io_, modem_->hangup());
  EXPECT_FALSE(ec) << log_text();
  EXPECT_FALSE(modem_->online());
  EXPECT_TRUE(
      logged("event=hangup method=escape result=ok bytes_in=6 "
             "bytes_out=6"))
      << log_text();

  // Guard time of silence before "+++" (HAYES §7).
  auto last_data = fake.when_received("hello\n");
  auto plus = fake.when_received("+");
  auto ath = fake.when_received("ATH");
  ASSERT_TRUE(last_data && plus && ath);
  auto guard = profile_.scaled(profile_.guard_time) - milliseconds(20);
  EXPECT_GE(*plus - *last_data, guard);
  EXPECT_GE(*ath - *plus, milliseconds(0));
}

TEST_F(SequenceTest, StreamRefusesWhenNotConnected) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  modem_ = std::move(o.modem);
  auto read = [&]() -> asio::awaitable<std::error_code> {
    char c;
    auto [ec, n] =
        co_await modem_->stream().async_read_some(asio::buffer(&c, 1), kTuple);
    co_return std::error_code(ec);
  };
  EXPECT_EQ(testing::run(io_, read()), ModemErrc::not_connected);
}

// ---- §13.6 carrier loss ----

TEST_F(SequenceTest, NoCarrierTextEndsDataModeWhereDcdIsUnknown) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600\r\n");
  fake.on("ping", "pong");
  fake.send("\r\nNO CARRIER\r\n", 200);
  fake.on("ATH\r", kOk);
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r);
  auto talk = [&]() -> asio::awaitable<std::error_code> {
    co_await asio::async_write(modem_->stream(),
                               asio::buffer(std::string("ping")), kTuple);
    std::string got;
    for (;;) {
      char buf[64];
      auto [ec, n] =
          co_await modem_->stream().async_read_some(asio::buffer(buf), kTuple);
      got.append(buf, n);
      if (ec) {
        EXPECT_EQ(got, "pong");
        co_return std::error_code(ec);
      }
    }
  };
  EXPECT_EQ(testing::run(io_, talk()), ModemErrc::carrier_lost);
  EXPECT_TRUE(logged("event=carrier-lost source=no-carrier-text"));
  EXPECT_FALSE(testing::run(io_, modem_->hangup())) << log_text();
  EXPECT_TRUE(logged("event=hangup method=ath result=ok"));
}

TEST_F(SequenceTest, DcdDropEndsDataModeOnControlSocket) {
  FakeModem fake(tmp_.path(), /*with_lines=*/true);
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600\r\n");
  fake.drop_carrier("", 400);  // DCD low, no text at all
  fake.on("ATH\r", kOk);
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r) << log_text();
  EXPECT_TRUE(logged("lines=control-socket"));
  auto read = [&]() -> asio::awaitable<std::error_code> {
    char buf[64];
    auto [ec, n] =
        co_await modem_->stream().async_read_some(asio::buffer(buf), kTuple);
    co_return std::error_code(ec);
  };
  EXPECT_EQ(testing::run(io_, read()), ModemErrc::carrier_lost);
  EXPECT_TRUE(logged("event=carrier-lost source=dcd")) << log_text();
}

TEST_F(SequenceTest, HangupByDtrDropWhereTheLineExists) {
  FakeModem fake(tmp_.path(), /*with_lines=*/true);
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600\r\n");
  fake.on("AT\r", kOk);
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r);
  EXPECT_FALSE(testing::run(io_, modem_->hangup())) << log_text();
  EXPECT_TRUE(logged("event=hangup method=dtr result=ok"));
  auto ctl = fake.control_received();
  ASSERT_GE(ctl.size(), 2u);
  EXPECT_EQ(ctl[ctl.size() - 2], "DTR 0");
  EXPECT_EQ(ctl.back(), "DTR 1");
  EXPECT_EQ(fake.received().find("+++"), std::string::npos);
}

TEST_F(SequenceTest, EscapeProfileNeverTouchesDtr) {
  profile_.hangup = HangupMethod::escape;
  FakeModem fake(tmp_.path(), /*with_lines=*/true);
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600\r\n");
  fake.on("+++", kOk).on("ATH\r", kOk);
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r);
  EXPECT_FALSE(testing::run(io_, modem_->hangup())) << log_text();
  for (const auto& l : fake.control_received()) EXPECT_NE(l, "DTR 0");
}

TEST_F(SequenceTest, ModemThatWillNotHangUpIsReported) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATDT5551234\r", "\r\nCONNECT 33600\r\n");
  CallResult r = open_and_dial(fake, "5551234");
  ASSERT_TRUE(r);
  EXPECT_EQ(testing::run(io_, modem_->hangup()), ModemErrc::hangup_failed);
}

// ---- answering ----

TEST_F(SequenceTest, HostAnswersAfterConfiguredRings) {
  profile_.answer_rings = 2;
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.send("\r\nRING\r\n", 100).send("\r\nRING\r\n", 300);
  fake.on("ATA\r", "\r\nCONNECT 33600/REL\r\n", 200);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  modem_ = std::move(o.modem);
  CallResult r = testing::run(io_, modem_->wait_for_call());
  ASSERT_TRUE(r) << log_text();
  EXPECT_EQ(r.connect.protocol, "REL");
  EXPECT_TRUE(logged("event=answer rings=2"));
  EXPECT_TRUE(logged("event=answer result=CONNECT speed=33600"));
}

TEST_F(SequenceTest, ModemAnswersByItselfWithS0) {
  profile_.answer = AnswerMethod::modem;
  profile_.answer_rings = 2;
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.on("ATS0=2\r", kOk);
  fake.send("\r\nRING\r\n", 100).send("\r\nRING\r\n", 200);
  fake.send("\r\nCONNECT 33600\r\n", 300);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  modem_ = std::move(o.modem);
  CallResult r = testing::run(io_, modem_->wait_for_call());
  ASSERT_TRUE(r) << log_text();
  EXPECT_EQ(fake.received().find("ATA"), std::string::npos);
}

TEST_F(SequenceTest, CallerGivingUpIsAbandoned) {
  profile_.answer_rings = 3;
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.send("\r\nRING\r\n", 100);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  modem_ = std::move(o.modem);
  CallResult r = testing::run(io_, modem_->wait_for_call(milliseconds(20000)));
  EXPECT_EQ(r.ec, ModemErrc::call_abandoned);
}

TEST_F(SequenceTest, NoRingWithinTheWaitIsNoCall) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  modem_ = std::move(o.modem);
  CallResult r = testing::run(io_, modem_->wait_for_call(milliseconds(1000)));
  EXPECT_EQ(r.ec, ModemErrc::no_call);
}

TEST_F(SequenceTest, AnswerWithoutCarrier) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.send("\r\nRING\r\n", 50);
  fake.on("ATA\r", "\r\nNO CARRIER\r\n", 100);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  modem_ = std::move(o.modem);
  CallResult r = testing::run(io_, modem_->wait_for_call());
  EXPECT_EQ(r.ec, ModemErrc::no_carrier);
}

// ---- locks (HAYES §13.8) ----

TEST_F(SequenceTest, LiveLockMakesOpenFailCleanly) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  char content[16];
  std::snprintf(content, sizeof content, "%10d\n", static_cast<int>(child));
  { std::ofstream(lock_dir_ + "/LCK..modem0") << content; }
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  EXPECT_EQ(o.ec, ModemErrc::port_locked);
  EXPECT_TRUE(logged("result=failed error=port_locked_by_another_process pid=" +
                     std::to_string(child)))
      << log_text();
  EXPECT_EQ(fake.received(), "");  // the port was never touched
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST_F(SequenceTest, LiveLockIsWaitedForWhenConfigured) {
  profile_.lock_wait = milliseconds(8000);  // 2 s scaled
  FakeModem fake(tmp_.path());
  script_init(fake);
  pid_t child = ::fork();
  if (child == 0) {
    ::usleep(300 * 1000);
    ::_exit(0);
  }
  char content[16];
  std::snprintf(content, sizeof content, "%10d\n", static_cast<int>(child));
  { std::ofstream(lock_dir_ + "/LCK..modem0") << content; }
  // Reap the child as soon as it exits so its PID really is gone.
  std::thread reaper([child] { ::waitpid(child, nullptr, 0); });
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  reaper.join();
  EXPECT_FALSE(o.ec) << log_text();
  EXPECT_TRUE(
      logged("stale_pid=" + std::to_string(child) + " action=taken-over"));
}

TEST_F(SequenceTest, SymlinkedPortAlsoLocksTheDevice) {
  FakeModem fake(tmp_.path());
  script_init(fake);
  fake.start();
  auto o = testing::run(io_, open(fake.path()));
  ASSERT_FALSE(o.ec);
  std::string dev = std::filesystem::canonical(fake.path()).string();
  EXPECT_TRUE(std::filesystem::exists(lock_dir_ + "/" + uucp_lock_name(dev)));
}

}  // namespace
}  // namespace ferry::modem
