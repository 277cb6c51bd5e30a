// End to end over ferry-modemsim through the libserialport path: stock
// libserialport opens the emulator's PTY with the help of the test-only
// LD_PRELOAD shim (tests/shim/), which answers the sysfs look-up and
// routes TIOCMGET/TIOCMBIS/TIOCMBIC to the emulator's PORT.ctl.  Proves the
// production path: speed/8N1/flow set by libserialport, DCD read with
// sp_get_signals, DTR dropped with sp_set_dtr.
#include <cstdlib>
#include <cstring>

#include "modem/modem.h"
#include "tests/modem/modemsim_fixture.h"

namespace ferry::modem::testing {
namespace {

class ShimTest : public ModemSimTest {
 protected:
  void SetUp() override {
    const char* preload = std::getenv("LD_PRELOAD");
    if (preload == nullptr ||
        std::strstr(preload, "serialport_shim") == nullptr)
      GTEST_SKIP() << "run with LD_PRELOAD=libferry_serialport_shim.so";
    ModemSimTest::SetUp();
    ::setenv("FERRY_SHIM_DIR", tmp_.path().c_str(), 1);
  }
};

TEST_F(ShimTest, LibserialportOpensTheEmulatorPort) {
  a_ = open("a");
  ASSERT_TRUE(a_);
  EXPECT_EQ(a_->port().transport(), "libserialport");
  EXPECT_TRUE(logged("modem a: event=open port=" + port("a") +
                     " transport=libserialport lines=libserialport"))
      << log_text();
  auto lines = a_->port().lines().get();
  ASSERT_TRUE(lines);
  EXPECT_FALSE(lines->dcd);  // no call yet
  EXPECT_TRUE(lines->dsr);
}

TEST_F(ShimTest, HangupByDtrDrop) {
  connect_a_to_b();
  EXPECT_EQ(a_->port().transport(), "libserialport");
  auto lines = a_->port().lines().get();
  ASSERT_TRUE(lines);
  EXPECT_TRUE(lines->dcd);  // sp_get_signals sees the carrier

  auto [sent, got] = run_both(send(*a_, "hello b\n"), receive(*b_, 8));
  EXPECT_EQ(got.bytes, "hello b\n");

  auto [hung, lost] = run_both(a_->hangup(), receive_until_error(*b_));
  EXPECT_FALSE(hung) << log_text();
  EXPECT_TRUE(logged("modem a: event=hangup method=dtr result=ok"))
      << log_text();
  EXPECT_EQ(lost.ec, ModemErrc::carrier_lost);
  // The emulator saw DTR go down through the shim, not an escape.
  EXPECT_NE(emulator_log().find("a: event=DTR detail=\"off\""),
            std::string::npos)
      << log_text();
  EXPECT_EQ(emulator_log().find("a: event=escape"), std::string::npos);
}

TEST_F(ShimTest, CarrierLossSeenByDcd) {
  connect_a_to_b();
  EXPECT_EQ(admin("fault b drop-after-bytes 50").substr(0, 2), "ok");
  std::string big(300, 'y');
  auto [sent, got] = run_both(send(*b_, big), receive_until_error(*a_));
  EXPECT_EQ(got.ec, ModemErrc::carrier_lost) << got.ec.message();
  EXPECT_TRUE(logged("modem a: event=carrier-lost source=dcd")) << log_text();
  EXPECT_FALSE(run(io_, a_->hangup())) << log_text();
}

}  // namespace
}  // namespace ferry::modem::testing
