// End to end over ferry-modemsim, termios path: the driver opens the
// emulator's PTYs (libserialport refuses them) and takes DCD from the
// emulator's PORT.ctl socket.  Two drivers, one per emulated modem, call
// each other, exchange bytes and hang up; faults come from the emulator's
// admin socket.
#include <boost/asio/ssl.hpp>
#include <cstdlib>

#include "modem/modem.h"
#include "tests/modem/modemsim_fixture.h"

namespace ferry::modem::testing {
namespace {

TEST_F(ModemSimTest, DialExchangeBytesHangUp) {
  connect_a_to_b();
  EXPECT_TRUE(logged("modem a: event=open port=" + port("a") +
                     " transport=termios lines=control-socket"));
  EXPECT_TRUE(logged("modem a: event=dial number=200 result=CONNECT"));
  EXPECT_TRUE(logged("modem b: event=answer result=CONNECT"));

  // All 256 byte values, both ways (the line is 8-bit clean).
  std::string payload;
  for (int i = 0; i < 256; ++i) payload += static_cast<char>(i);
  auto [sent, got] = run_both(send(*a_, payload), receive(*b_, payload.size()));
  EXPECT_FALSE(sent);
  EXPECT_FALSE(got.ec) << got.ec.message();
  EXPECT_EQ(got.bytes, payload);
  auto [sent2, got2] = run_both(send(*b_, "250 ok\r\n"), receive(*a_, 8));
  EXPECT_FALSE(sent2);
  EXPECT_EQ(got2.bytes, "250 ok\r\n");

  // a hangs up (DTR drop: the control socket carries DTR); b sees the
  // carrier go.
  auto [hung, lost] = run_both(a_->hangup(), receive_until_error(*b_));
  EXPECT_FALSE(hung) << hung.message() << "\n" << log_text();
  EXPECT_TRUE(logged("modem a: event=hangup method=dtr result=ok"));
  EXPECT_EQ(lost.ec, ModemErrc::carrier_lost) << lost.ec.message();
  EXPECT_TRUE(logged("modem b: event=carrier-lost"));
  EXPECT_FALSE(run(io_, b_->hangup())) << log_text();
}

TEST_F(ModemSimTest, EscapeHangupWhenProfileSaysSo) {
  profile_.hangup = HangupMethod::escape;
  connect_a_to_b();
  auto [hung, lost] = run_both(a_->hangup(), receive_until_error(*b_));
  EXPECT_FALSE(hung) << log_text();
  EXPECT_TRUE(logged("modem a: event=hangup method=escape result=ok"));
  // The far side saw "+++" as data (HAYES §7 rule 5), then lost carrier.
  EXPECT_EQ(lost.bytes, "+++");
  EXPECT_EQ(lost.ec, ModemErrc::carrier_lost);
}

TEST_F(ModemSimTest, CarrierDropMidCallSurfacesOnTheStream) {
  connect_a_to_b();
  EXPECT_EQ(admin("fault a drop-after-bytes 100").substr(0, 2), "ok");
  std::string big(400, 'x');
  auto [sent, got] = run_both(send(*a_, big), receive_until_error(*b_));
  EXPECT_EQ(got.ec, ModemErrc::carrier_lost) << got.ec.message();
  EXPECT_LT(got.bytes.size(), big.size());
  EXPECT_TRUE(logged("modem b: event=carrier-lost source=dcd")) << log_text();
  // Both sides can go back on-hook and dial again.
  EXPECT_FALSE(run(io_, a_->hangup())) << log_text();
  EXPECT_FALSE(run(io_, b_->hangup())) << log_text();
  EXPECT_EQ(admin("clear a").substr(0, 2), "ok");
  auto [ra, rb] =
      run_both(a_->dial("200"), b_->wait_for_call(std::chrono::seconds(60)));
  EXPECT_TRUE(ra) << ra.ec.message() << "\n" << log_text();
  EXPECT_TRUE(rb) << rb.ec.message();
}

struct FaultCase {
  const char* fault;
  ModemErrc want;
};
void PrintTo(const FaultCase& c, std::ostream* os) { *os << c.fault; }

class ModemSimFaultTest : public ModemSimTest,
                          public ::testing::WithParamInterface<FaultCase> {};

TEST_P(ModemSimFaultTest, DialFailureIsClassified) {
  a_ = open("a");
  b_ = open("b");
  ASSERT_TRUE(a_ && b_);
  ASSERT_EQ(admin(std::string("fault a ") + GetParam().fault).substr(0, 2),
            "ok");
  CallResult r = run(io_, a_->dial("200"));
  EXPECT_EQ(r.ec, GetParam().want)
      << r.ec.message() << " '" << r.result_text << "'\n"
      << log_text();
  EXPECT_FALSE(a_->online());
}

INSTANTIATE_TEST_SUITE_P(
    Faults, ModemSimFaultTest,
    ::testing::Values(FaultCase{"busy", ModemErrc::busy},
                      FaultCase{"no-dialtone", ModemErrc::no_dialtone},
                      FaultCase{"blacklisted", ModemErrc::blacklisted},
                      FaultCase{"delayed", ModemErrc::delayed},
                      FaultCase{"no-carrier", ModemErrc::no_carrier}),
    [](const auto& p) {
      std::string n = p.param.fault;
      for (char& c : n)
        if (c == '-') c = '_';
      return n;
    });

TEST_F(ModemSimTest, NumberNobodyHasGivesNoCarrierOrNoAnswer) {
  a_ = open("a");
  ASSERT_TRUE(a_);
  CallResult r = run(io_, a_->dial("999"));
  EXPECT_TRUE(r.ec == ModemErrc::no_carrier || r.ec == ModemErrc::no_answer)
      << r.ec.message() << "\n"
      << log_text();
}

TEST_F(ModemSimTest, MuteModemIsNotResponding) {
  ASSERT_EQ(admin("fault a mute").substr(0, 2), "ok");
  ModemProfile p = profile_;
  p.name = "a";
  auto o = run(
      io_, Modem::open(io_.get_executor(), port("a"), p, lock_dir_, logger()));
  EXPECT_EQ(o.ec, ModemErrc::not_responding) << log_text();
  EXPECT_FALSE(std::filesystem::exists(lock_dir_ + "/LCK..a"));
}

TEST_F(ModemSimTest, SecondDriverOnSamePortIsRefused) {
  a_ = open("a");
  ASSERT_TRUE(a_);
  ModemProfile p = profile_;
  p.name = "a2";
  auto o = run(
      io_, Modem::open(io_.get_executor(), port("a"), p, lock_dir_, logger()));
  EXPECT_EQ(o.ec, ModemErrc::port_locked);
  EXPECT_TRUE(logged("modem a2: event=lock lock=" + lock_dir_ +
                     "/LCK..a result=failed"));
}

TEST_F(ModemSimTest, ModemAnswersWithS0) {
  profile_.answer = AnswerMethod::modem;
  profile_.answer_rings = 2;
  a_ = open("a");
  b_ = open("b");
  ASSERT_TRUE(a_ && b_);
  auto [ra, rb] =
      run_both(a_->dial("200"), b_->wait_for_call(std::chrono::seconds(60)));
  EXPECT_TRUE(ra) << ra.ec.message() << "\n" << log_text();
  EXPECT_TRUE(rb) << rb.ec.message() << "\n" << log_text();
  EXPECT_TRUE(logged("modem b: event=ring count=2"));
}

// The stream is an ordinary Asio stream: TLS runs over the modem line as
// it would over TCP (what the link session will do).
namespace tls {

bool make_certificate(const std::string& dir) {
  std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt "
      "ec_paramgen_curve:prime256v1 -nodes -days 1 "
      "-subj /CN=ferry-modem-test -keyout " +
      dir + "/key.pem -out " + dir + "/cert.pem >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

}  // namespace tls

TEST_F(ModemSimTest, TlsOverTheModemLine) {
  if (!tls::make_certificate(tmp_.path()))
    GTEST_SKIP() << "openssl command not available";
  connect_a_to_b();

  namespace ssl = asio::ssl;
  ssl::context server_ctx(ssl::context::tls_server);
  server_ctx.use_certificate_chain_file(tmp_.path() + "/cert.pem");
  server_ctx.use_private_key_file(tmp_.path() + "/key.pem", ssl::context::pem);
  ssl::context client_ctx(ssl::context::tls_client);
  client_ctx.load_verify_file(tmp_.path() + "/cert.pem");
  client_ctx.set_verify_mode(ssl::verify_peer);

  ssl::stream<ModemStream&> client(a_->stream(), client_ctx);
  ssl::stream<ModemStream&> server(b_->stream(), server_ctx);

  auto client_side = [&]() -> asio::awaitable<std::string> {
    auto [ec] =
        co_await client.async_handshake(ssl::stream_base::client, kTuple);
    if (ec) co_return "client handshake: " + ec.message();
    std::string hello = "EHLO branch.example\r\n";
    auto [wec, wn] =
        co_await asio::async_write(client, asio::buffer(hello), kTuple);
    if (wec) co_return "client write: " + wec.message();
    std::string reply(12, '\0');
    auto [rec, rn] =
        co_await asio::async_read(client, asio::buffer(reply), kTuple);
    if (rec) co_return "client read: " + rec.message();
    co_return reply;
  };
  auto server_side = [&]() -> asio::awaitable<std::string> {
    auto [ec] =
        co_await server.async_handshake(ssl::stream_base::server, kTuple);
    if (ec) co_return "server handshake: " + ec.message();
    std::string got(21, '\0');
    auto [rec, rn] =
        co_await asio::async_read(server, asio::buffer(got), kTuple);
    if (rec) co_return "server read: " + rec.message();
    std::string reply = "250 welcome\n";
    co_await asio::async_write(server, asio::buffer(reply), kTuple);
    co_return got;
  };
  auto [c, s] = run_both(client_side(), server_side());
  EXPECT_EQ(s, "EHLO branch.example\r\n") << log_text();
  EXPECT_EQ(c, "250 welcome\n") << log_text();
}

}  // namespace
}  // namespace ferry::modem::testing
